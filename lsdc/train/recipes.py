"""Named training recipes that more than one verb runs: the demo's (``lsdc demo``, and the default
recipe of ``lsdc bench quality``, which measures it over many datasets) and its per-view schedule."""
from __future__ import annotations

import dataclasses

from ..core.config import Config
from ..core.schema import SAG_T2, VIEWS

DEMO_OVERRIDES = [f"--preprocess.{v}.out_px=48" for v in VIEWS] + [
    # Measured with `lsdc bench quality` (48 train / 48 test studies, 5 seeds the demo never uses, true
    # points; benchmarks/RESULTS.md "Issue 17"): a tiny from-scratch convnext at 48 px, 12 epochs (6 for
    # the two-sided views), no augmentation, class weights [1, 2, 4]: calibrated skill 0.461 +- 0.083,
    # worst seed 0.343, in ~1 minute of training. On the same seeds the repaired default augmentation
    # scored 0.283 +- 0.189; checkpoints chosen by score and an any-severe loss term (weight 1.0 or
    # 0.3) did no better.
    "--backbone=test_convnext", "--proj_dim=64", "--gru_hidden=32", "--attn_dim=32", "--level_emb_dim=16",
    "--batch_size=8", "--epochs=12", "--lr=0.001", "--backbone_lr=0.001", "--warmup_epochs=1", "--patience=0",
    "--loader.workers=0", "--augment=false", "--class_weights=[1,2,4]",
    # the localiser at its defaults (three ensemble members): with two, the demo ran 6 min 22 s and lost
    # 0.029 of score to localisation (skill 0.40 with predicted points, 0.45 at the true ones)
    "--loc_epochs=40"]


def view_schedule(cfg: Config, view: str) -> Config:
    """The demo's schedule of one view: the spinal view gets the full ``train.epochs`` (its BA is the
    demo's learning check); the two two-sided views, with twice the samples, get half of it.
    `lsdc bench quality` trains every recipe this way, so its figures are the demo's."""
    epochs = cfg.train.epochs if view == SAG_T2 else max(1, cfg.train.epochs // 2)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs))
