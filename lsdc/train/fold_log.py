"""What one fold's training shows and writes, epoch by epoch (the main rank only; the others no-op).

    the start line and each epoch's printed line
    metrics.jsonl   one record per epoch (:func:`metrics_record`: train loss, validation metrics, timing, lr)
    steps.jsonl     one record per optimiser step (epoch, step, loss, data_s, compute_s, lr)
    curves.png      every epoch so far; and at a new best epoch predictions.csv, confusion.png, attention.png
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.config import TrainConfig
from . import report
from .epoch import EpochStats
from .step import Step

METRICS_FILE, STEPS_FILE = "metrics.jsonl", "steps.jsonl"


def metrics_record(epoch: int, st: EpochStats, val: dict, s: Step, tcfg: TrainConfig, backend: str, world: int,
                 best_epoch: int) -> dict:
    """One metrics.jsonl record: the epoch's training (loss, throughput, data-wait share, lr) and validation."""
    n = max(1, len(st.lines))
    lrs = {g["name"]: lr for g, lr in zip(s.optimizer.param_groups, s.scheduler.get_last_lr())}
    busy = st.data_s + st.compute_s
    return {"epoch": epoch, "step": st.step, "train_loss": st.train_loss, **val,
            "samples_per_s": st.samples * world / max(1e-9, busy), "data_s": st.data_s,
            "compute_s": st.compute_s, "data_s_per_step": st.data_s / n,
            "compute_s_per_step": st.compute_s / n, "data_wait_share": st.data_s / max(1e-9, busy),
            "lr": max(lrs.values()), "backbone_lr": lrs.get("backbone", 0.0), "min_recall": tcfg.min_recall,
            "backend": backend, "world": world, "best_epoch": best_epoch}


class FoldLog:
    """The fold directory's records, plots and printed lines (see the module docstring)."""

    def __init__(self, fold_dir, view: str, fold: int, main: bool):
        self.dir, self.view, self.fold, self.main = Path(fold_dir), view, fold, main
        self.metrics_path = self.dir / METRICS_FILE

    def start(self, n_train: int, n_val: int, steps_per_epoch: int, epochs: int, backend: str, device, world: int,
              start_epoch: int) -> None:
        if self.main:
            print(f"train {self.view} fold {self.fold}: {n_train} train / {n_val} val samples, "
                  f"{steps_per_epoch} steps/epoch x {epochs} epochs, backend={backend}, device={device}, "
                  f"world={world}" + (f", resuming at epoch {start_epoch}" if start_epoch else ""), flush=True)

    def truncate(self, last_epoch: int) -> None:
        """Drop what was logged after the checkpoint a resumed run starts from."""
        if self.main:
            report.truncate_jsonl(self.metrics_path, last_epoch)
            report.truncate_jsonl(self.dir / STEPS_FILE, last_epoch)

    def epoch(self, rec: dict, steps: list, pred: pd.DataFrame, ev: dict, improved: bool) -> None:
        """Write the epoch's records and plots (a new best's predictions and plots too), print its line."""
        if not self.main:
            return
        report.append_jsonl(self.metrics_path, rec)
        for line in steps:
            report.append_jsonl(self.dir / STEPS_FILE, line)
        report.plot_curves(report.read_jsonl(self.metrics_path), self.dir / "curves.png")
        name = f"{self.view} fold {self.fold} epoch {rec['epoch']}"
        if improved:
            pred.to_csv(self.dir / "predictions.csv", index=False)
            report.plot_confusion(rec["confusion"], self.dir / "confusion.png",
                                  f"{name}: BA {rec['balanced_accuracy']:.3f}")
            report.plot_attention(ev["images"], ev["attention"][:len(ev["images"])], ev["label"], ev["probs"],
                                  self.dir / "attention.png")
        alarm = f"  DEAD CLASS {rec['dead_classes']}" if rec["dead_classes"] else ""
        print(f"{name}: train_loss {rec['train_loss']:.4f} val_loss {rec['val_loss']:.4f} "
              f"BA {rec['balanced_accuracy']:.3f} recall {np.round(rec['recall'], 3).tolist()} score "
              f"{rec['score']:.4f} (prior {rec['prior']:.4f}"
              + (f", skill {rec['skill']:.3f}" if rec["skill"] is not None else "") + ") | "
              f"{rec['samples_per_s']:.1f} samples/s, data wait "
              f"{100 * rec['data_wait_share']:.0f}%{' *best*' if improved else ''}{alarm}", flush=True)
