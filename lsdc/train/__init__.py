"""Training: the loop (``train``, ``train_folds``: loop.py) over one epoch's steps (epoch.py), validation
(evaluate.py), the fold's records (fold_log.py) and checkpoints (checkpoint.py); the shared ``train_step``
(step.py) and folds.

``train(cfg, store, view, fold, out_dir)`` trains one fold and returns the best epoch's validation
summary (balanced_accuracy, recall, score of the view's official terms, ...); ``train_views`` does
that for several views, as the demo does.
"""
from __future__ import annotations

from ..core.schema import VIEWS
from .checkpoint import load_model
from .folds import assign_folds, split_rows
from .loop import train, train_folds
from .step import build_step, train_step


def train_views(cfg, store, out_dir, views=VIEWS, fold: int = 0) -> dict:
    """{view: summary of :func:`train` on ``fold``} with each view in OUT_DIR/<view>/."""
    from pathlib import Path
    return {v: train(cfg, store, v, fold, Path(out_dir) / v) for v in views}


__all__ = ["train", "train_folds", "train_views", "train_step", "build_step", "load_model", "assign_folds",
           "split_rows"]
