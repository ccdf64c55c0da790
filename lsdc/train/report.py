"""What a training run writes: metrics.jsonl, the view's share of the official score, PNG plots.

The official score of one view (the metric of lsdc.metric.official restricted to the terms that view predicts):

    sagittal_t2   mean(spinal, any_severe)
    sagittal_t1   foraminal
    axial_t2      subarticular

computed by :func:`lsdc.metric.official.score_frames` itself on a labels frame holding only the
view's cells of the validation studies (every other cell blank, hence unscored) and a submission of
the predictions. A cell predicted by several samples (e.g. two axial series) gets their mean.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..core.schema import (  # noqa: E402
    BLANK,
    GROUP_OF,
    LABEL_COLUMNS,
    SEVERITIES,
    SPINAL,
    VIEW_CONDITIONS,
    label_column,
)
from ..metric.official import predictions_to_submission, score_frames  # noqa: E402

PROBS = ("p0", "p1", "p2")


def view_terms(view: str) -> tuple[str, ...]:
    """The official-metric terms a view's predictions feed."""
    conds = VIEW_CONDITIONS[view]
    groups = tuple(dict.fromkeys(GROUP_OF[c] for c in conds))
    return groups + (("any_severe",) if SPINAL in conds else ())


def view_score(view: str, pred: pd.DataFrame) -> dict:
    """{"score": mean of the view's terms, <term>: value} of per-sample predictions ``pred``
    (columns study_id, condition, level, label, p0, p1, p2); NaN when nothing is labelled."""
    cells = (pred.groupby(["study_id", "condition", "level"], sort=True)
             .agg(label=("label", "max"), p0=("p0", "mean"), p1=("p1", "mean"), p2=("p2", "mean"))
             .reset_index())
    cells["column"] = [label_column(c, lv) for c, lv in zip(cells["condition"], cells["level"])]
    labels = (cells.pivot(index="study_id", columns="column", values="label")
              .reindex(columns=list(LABEL_COLUMNS)).fillna(BLANK).astype(np.int64))
    sub = predictions_to_submission(cells[["study_id", "condition", "level", *PROBS]].itertuples(index=False))
    terms = view_terms(view)
    if not (cells["label"] != BLANK).any():
        return {"score": math.nan, **{t: math.nan for t in terms}}
    res = score_frames(labels.reset_index(), sub)
    out = {t: res[t] for t in terms}
    return {"score": float(np.mean(list(out.values()))), **out}


# -- metrics.jsonl -------------------------------------------------------------------------------
def append_jsonl(path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record, allow_nan=True) + "\n")


def read_jsonl(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_json(path, obj) -> None:
    Path(path).write_text(json.dumps(obj, indent=1))


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())


def truncate_jsonl(path, last_epoch: int) -> None:
    """Keep the records of epochs <= last_epoch (a resumed run redoes anything logged after its checkpoint)."""
    records = [r for r in read_jsonl(path) if r["epoch"] <= last_epoch]
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records))


# -- plots ---------------------------------------------------------------------------------------
SHORT = ("normal/mild", "moderate", "severe")


def plot_curves(records: list[dict], path) -> None:
    """Losses, balanced accuracy and per-class recall, view score, learning rate per epoch."""
    if not records:
        return
    ep = [r["epoch"] for r in records]
    fig, ax = plt.subplots(1, 4, figsize=(18, 4))
    ax[0].plot(ep, [r["train_loss"] for r in records], "o-", label="train")
    ax[0].plot(ep, [r["val_loss"] for r in records], "o-", label="validation")
    ax[0].set_title("loss (weighted CE)")
    ax[1].plot(ep, [r["balanced_accuracy"] for r in records], "ko-", label="balanced accuracy")
    for k, name in enumerate(SHORT):
        ax[1].plot(ep, [r["recall"][k] for r in records], ".--", label=f"recall {name}")
    ax[1].axhline(records[-1].get("min_recall", 0.2), color="r", lw=0.8, ls=":", label="dead-class line")
    ax[1].set_ylim(-0.02, 1.02)
    ax[1].set_title("validation")
    ax[2].plot(ep, [r["score"] for r in records], "o-")
    ax[2].set_title("official score, this view (lower is better)")
    ax[3].plot(ep, [r["lr"] for r in records], "o-")
    ax[3].set_title("peak-group learning rate")
    for a in ax:
        a.set_xlabel("epoch")
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_confusion(cm, path, title: str = "") -> None:
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(cm / np.maximum(cm.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center")
    ax.set_xticks(range(3), SHORT, fontsize=8)
    ax.set_yticks(range(3), SHORT, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_attention(images: np.ndarray, attention: np.ndarray, labels, probs, path) -> None:
    """images (N, S, H, W) first channel, attention (N, S): each slice titled with its weight."""
    n, s = attention.shape
    if n == 0:
        return
    fig, ax = plt.subplots(n, s, figsize=(1.6 * s, 1.8 * n), squeeze=False)
    for i in range(n):
        for j in range(s):
            a = ax[i, j]
            a.imshow(images[i, j], cmap="gray")
            a.set_xticks([])
            a.set_yticks([])
            a.set_title(f"a={attention[i, j]:.2f}", fontsize=8,
                        color="r" if attention[i, j] == attention[i].max() else "k")
        lab = SEVERITIES[labels[i]] if labels[i] >= 0 else "blank"
        ax[i, 0].set_ylabel(f"true {lab}\npred {SEVERITIES[int(np.argmax(probs[i]))]}", fontsize=7)
    fig.suptitle("attention over slices (validation samples)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


# -- the yardstick: prior, ceiling, skill ----------------------------------------------------------
ORACLE_FILE = "train_oracle.csv"


def oracle_of(store) -> pd.DataFrame | None:
    """The oracle submission of the store's training studies, where the data came with one (synth
    writes ``train_oracle.csv`` beside ``train.csv``; the real data has none)."""
    from ..core.readers import read_sample_submission
    from ..store.reader import open_root
    labels = open_root(store).attrs.get("inputs", {}).get("labels")
    path = Path(labels).parent / ORACLE_FILE if labels else None
    return read_sample_submission(path) if path is not None and path.is_file() else None


def oracle_predictions(pred: pd.DataFrame, oracle: pd.DataFrame) -> pd.DataFrame:
    """``pred`` with p0..p2 replaced by the oracle's probabilities of each row's cell."""
    from ..core.schema import SUBMISSION_COLUMNS
    table = oracle.set_index(["study_id", "condition", "level"])[list(SUBMISSION_COLUMNS)]
    keys = pd.MultiIndex.from_arrays([pred["study_id"], pred["condition"], pred["level"]])
    out = pred.copy()
    out[list(PROBS)] = table.reindex(keys).to_numpy()
    return out


def references(view: str, pred: pd.DataFrame, model: dict, prior, oracle: pd.DataFrame | None) -> dict:
    """The view's score of the prior (best constant per cell, fitted on the training labels: one
    ``fit_prior`` frame, or ``{fold: frame}`` for out-of-fold rows) and of the oracle (None without
    one) on the rows of ``pred``, and skill = (prior - model) / (prior - ceiling) per term."""
    from ..metric.baselines import prior_predictions, skill
    pri = view_score(view, prior_predictions(pred, prior))
    ceil = view_score(view, oracle_predictions(pred, oracle)) if oracle is not None else None
    keys = ("score",) + view_terms(view)
    return {"prior": pri, "ceiling": ceil,
            "skill": {k: skill(model[k], pri[k], None if ceil is None else ceil[k]) for k in keys}}
