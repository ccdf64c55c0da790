"""Run the trained classifiers of run directories on a (test) store: folds averaged, optional TTA,
the run's calibration (:mod:`lsdc.inference.calibrate`), and the training prior for cells nothing
could predict.

A run directory is what ``lsdc train STORE --view V --fold K|all --out RUN_DIR`` wrote: its
``fold*/best.pt`` are averaged (one fold or all), ``oof.csv`` / ``fold*/predictions.csv`` hold the
labels the prior is fitted on (:func:`training_prior`) and the out-of-fold predictions calibration is
fitted on.

Images reach the model exactly as the validation loader builds them
(:func:`lsdc.loaders.augment.eval_transform`: the centre crop, the same normalisation); TTA shifts the slice
window by -1/+1 within the stored slice margin (never an image flip: left and right are the patient's).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core.config import Config
from ..core.overrides import load_config
from ..core.errors import InputError
from ..loaders.augment import eval_transform
from ..metric.baselines import fit_prior
from ..store.chunks import StoreReader
from ..store.reader import sample_meta
from ..train.checkpoint import load_model
from . import calibrate as cal


@dataclass
class Run:
    """One run directory: its view, fold models, calibration and the labels of its predictions."""

    path: Path
    view: str
    cfg: Config
    checkpoints: list
    calibration: dict | None = None  # calibrate.fit_calibration's parameters; None = uncalibrated
    labels: pd.DataFrame | None = None  # RUN_LABEL_COLUMNS of oof.csv (else fold*/predictions.csv), if any
    models: list = field(default_factory=list)


#: the columns of a run's predictions that the prior reads (the long form fit_prior takes)
RUN_LABEL_COLUMNS = ("study_id", "condition", "level", "label")


def training_prior(runs) -> pd.DataFrame:
    """The prior of every (condition, level) cell (:func:`lsdc.metric.baselines.fit_prior`, the one
    `lsdc score --prior-from`, training and the demo use) fitted on the labels of the runs' predictions,
    pooled (a study's cell seen by several runs counts once); a condition no run predicts falls back
    as fit_prior's do (uniform)."""
    frames = [r.labels for r in runs if r.labels is not None]
    labels = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(RUN_LABEL_COLUMNS))
    return fit_prior(labels)


def load_run(run_dir, calibrate: bool = True, device: str = "cpu") -> Run:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise InputError(f"{run_dir}: not a run directory (no config.yaml); train one with `lsdc train`")
    ckpts = sorted(run_dir.glob("fold*/best.pt"))
    if not ckpts:
        raise InputError(f"{run_dir}: no fold*/best.pt; the run has not finished an epoch")
    models, views = [], set()
    for p in ckpts:
        model, _, meta = load_model(p, device)
        models.append((model, meta))
        views.add(meta["view"])
    if len(views) != 1:
        raise InputError(f"{run_dir}: checkpoints of several views {sorted(views)}")
    view = views.pop()
    cfg = load_config(run_dir / "config.yaml")
    pred, _ = cal.run_predictions(run_dir)
    run = Run(run_dir, view, cfg, ckpts, labels=None if pred is None else pred[list(RUN_LABEL_COLUMNS)], models=models)
    if calibrate:
        run.calibration = cal.load_or_fit(run_dir)
    return run


def _images(stacks: np.ndarray, spec, channels: int, shift: int) -> torch.Tensor:
    m = spec.slice_margin + shift
    window = np.ascontiguousarray(stacks[:, m:m + spec.slices])
    return eval_transform(window, spec, channels)


@torch.no_grad()
def run_probs(run: Run, reader: StoreReader, meta: dict, rows: np.ndarray, spec, tta: bool) -> np.ndarray:
    """(len(rows), 3) probabilities: the mean over folds and TTA shifts (calibration comes after, per
    cell and study: :func:`calibrate_cells`)."""
    if not len(rows):
        return np.zeros((0, 3))
    stacks = reader.read(rows)
    shifts = [0] + ([-1, 1] if tta and spec.slice_margin >= 1 else [])
    level = torch.from_numpy(meta["level"][rows])
    side = torch.from_numpy(meta["side"][rows])
    probs = []
    for shift in shifts:
        x = _images(stacks, spec, run.cfg.loader.channels, shift)
        for model, m in run.models:
            device = next(model.parameters()).device
            out = model(x.to(device), level.to(device), side.to(device) if m["two_sided"] else None)
            probs.append(torch.softmax(out["logits"].float(), 1).cpu().numpy())
    return np.mean(probs, axis=0)


def calibrate_cells(run: Run, cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (study, condition, level) of this run (study_id, condition, level, p0, p1, p2) with
    the run's calibration applied (unchanged when it has none)."""
    return cal.apply_calibration(cells, run.calibration)


def open_view(store, view: str, index: pd.DataFrame) -> tuple[StoreReader, dict]:
    reader = StoreReader(store, view)
    if len(reader) != len(index):
        raise InputError(f"{store}/{view}: index has {len(index)} rows, crops {len(reader)}; convert again")
    return reader, sample_meta(index)
