"""`lsdc train-localizer STORE --out DIR [--config cfg.yaml] [--key=value ...]`

Trains the level localiser on the store's sagittal volumes and labelled keypoints (a train-split
store from `lsdc preprocess`), measures it on a held-out fold of studies (``--loc_holdout_fold``, -1
trains on every study) and writes DIR/localizer.pt, DIR/localizer.json (median_error_mm, slice_exact,
slice_within_1, per view, per level, per keypoint, axial projection accuracy) and DIR/config.yaml.
Settings: the ``localizer.loc_*`` config keys (e.g. --loc_epochs=40 --loc_width=16).
"""
from __future__ import annotations

import argparse

from ..core.overrides import accept_overrides, load_config


def configure(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = __doc__
    p.add_argument("store", help="the store written by `lsdc preprocess` (train split)")
    p.add_argument("--out", required=True, help="localiser directory")
    p.add_argument("--config", default=None, help="YAML config file")
    p.add_argument("--no-progress", action="store_true")
    accept_overrides(p, ("localizer",))


def run(args) -> int:
    from .train import train_localizer
    m = train_localizer(args.store, args.out, load_config(args.config, args.overrides), progress=not args.no_progress)
    if "median_error_mm" in m:
        print(f"held-out: median error {m['median_error_mm']:.2f} mm, slice exact {m['slice_exact']:.1%}, "
              f"within 1 {m['slice_within_1']:.1%} over {m['n']} keypoints; trained in {m['train_seconds']:.0f} s")
        for view, v in m["per_view"].items():
            if v.get("n"):
                print(f"  {view:12s} median {v['median_error_mm']:.2f} mm, exact {v['slice_exact']:.1%}, "
                      f"within 1 {v['slice_within_1']:.1%} (n={v['n']})")
    else:
        print(f"trained on every study in {m['train_seconds']:.0f} s (no held-out fold)")
    return 0
