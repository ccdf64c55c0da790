"""Validation (timm's ``validate``): outputs gathered over ranks (each row once), the epoch's metrics
and the view's score beside the yardstick (prior, ceiling, skill), and the best-epoch rule.

Best epoch and the dead-class gate: an epoch is "gate ok" when no class present in the validation
fold has recall < train.min_recall (the seed kept checkpoints only with Moderate and Severe alive).
Epochs compare by (gate ok, select_metric): a gate-ok epoch always beats one that is not, so an epoch
with a dead class is kept as best only while no epoch so far has passed the gate. NaN is the worst.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..core.config import TrainConfig
from ..metric.baselines import fit_prior
from ..metric.classification import epoch_metrics
from ..model import class_weighted_ce
from ..store.reader import read_index
from . import distributed as dist
from . import report
from .folds import split_rows
from .step import Step, loader_batches, model_inputs

HIGHER_IS_BETTER = {"balanced_accuracy": True, "score": False, "val_loss": False}


@dataclass(frozen=True)
class FoldData:
    """One fold of one view: the store's index, its training and validation rows, and the yardstick's
    prior (fitted on the training rows) and oracle (None where the data came without one)."""
    view: str
    fold: int
    index: pd.DataFrame
    train_rows: np.ndarray
    val_rows: np.ndarray
    prior: pd.DataFrame
    oracle: pd.DataFrame | None

    @classmethod
    def of(cls, store, view: str, fold: int, tcfg: TrainConfig) -> "FoldData":
        index = read_index(store, view)
        train_rows, val_rows = split_rows(index, tcfg.folds, tcfg.seed, fold)
        prior = fit_prior(index.iloc[train_rows])
        return cls(view, fold, index, train_rows, val_rows, prior, report.oracle_of(store))


def validate(s: Step, loader, d: dist.Dist, data: FoldData, tcfg: TrainConfig) -> tuple[dict, pd.DataFrame, dict]:
    """One validation pass: (the epoch's validation metrics with the yardstick's prior, ceiling and
    skill scores, the per-row prediction frame, the raw outputs of :func:`evaluate` for the plots)."""
    ev = evaluate(s, loader, d)
    val, pred = epoch_record(data.view, ev, data.index, data.fold, tcfg)
    refs = report.references(data.view, pred, val, data.prior, data.oracle)
    val.update(prior=refs["prior"]["score"], ceiling=(refs["ceiling"] or {}).get("score"),
               skill=refs["skill"]["score"])
    return val, pred, ev


@torch.no_grad()
def evaluate(s: Step, loader, d: dist.Dist, keep_images: int = 4) -> dict:
    """Validation outputs as NumPy, gathered over ranks, one entry per store row, sorted by row."""
    s.eval_model.eval()
    got = {"row": [], "label": [], "logits": [], "attention": []}
    images = []
    for batch in loader_batches(loader):  # leaves the training RNG alone
        x, level, side = model_inputs(s, batch)
        with torch.autocast(s.device.type, dtype=s.amp_dtype or torch.float32, enabled=s.amp_dtype is not None):
            out = s.eval_model(x, level, side)
        got["row"].append(batch["row"].cpu().numpy())
        got["label"].append(batch["label"].cpu().numpy())
        got["logits"].append(out["logits"].float().cpu().numpy())
        got["attention"].append(out["attention"].float().cpu().numpy())
        if sum(len(i) for i in images) < keep_images:
            images.append(batch["image"][:keep_images, :, 0].float().cpu().numpy())  # (b, S, H, W) first channel
    mine = {k: np.concatenate(v) for k, v in got.items()}
    parts = dist.gather(mine, d)
    res = {k: np.concatenate([p[k] for p in parts]) for k in mine}
    _, first = np.unique(res["row"], return_index=True)  # a row padded onto two ranks counts once
    res = {k: v[first] for k, v in res.items()}
    res["probs"] = torch.softmax(torch.from_numpy(res["logits"]), dim=1).numpy()
    res["images"] = np.concatenate(images)[:keep_images] if images else np.zeros((0,))
    return res


def epoch_record(view: str, ev: dict, index: pd.DataFrame, fold: int, tcfg: TrainConfig) -> tuple[dict, pd.DataFrame]:
    """Validation metrics of one epoch and the per-row prediction frame."""
    m = epoch_metrics(ev["label"], ev["probs"], tcfg.min_recall)
    val_loss = class_weighted_ce(torch.from_numpy(ev["logits"]), torch.from_numpy(ev["label"]), tcfg.class_weights)
    rows = index.iloc[ev["row"]]
    pred = pd.DataFrame({"row": ev["row"], "study_id": rows["study_id"].to_numpy(),
                         "condition": rows["condition"].to_numpy(), "level": rows["level"].to_numpy(),
                         "label": ev["label"], "p0": ev["probs"][:, 0], "p1": ev["probs"][:, 1],
                         "p2": ev["probs"][:, 2], "fold": fold})
    official = report.view_score(view, pred)
    rec = {"val_loss": float(val_loss), "balanced_accuracy": m["balanced_accuracy"], "recall": m["recall"],
           "confusion": m["confusion"], "dead_classes": m["dead_classes"], "dead_class_alarm": bool(m["dead_classes"]),
           "wlogloss": m["wlogloss"], **official}
    return rec, pred


def is_better(rec: dict, best: dict | None, metric: str) -> bool:
    """(gate ok, metric) beats best's lexicographically; NaN is worst (see the module docstring)."""
    def key(r):
        v = r["value"]
        v = -math.inf if v is None or math.isnan(v) else (v if HIGHER_IS_BETTER[metric] else -v)
        return (r["gate_ok"], v)
    return best is None or key(rec) > key(best)
