"""Training, the nanoGPT / timm way: ``train`` is one short, visible loop over epochs.

    setup           device, DDP, the fold's rows, loaders, model + optimizer + schedule (build_step)
    resume          CheckpointSaver.resume: model, optimizer, scheduler, scaler, RNG, epoch, step, best
    for epoch:
      train_one_epoch   epoch.py: the step loop (train_step), losses read back every LOG_EVERY steps
      validate          evaluate.py: outputs gathered over ranks, metrics, score, prior/ceiling/skill
      best?             CheckpointSaver.update: select_metric behind the dead-class gate (is_better)
      log               fold_log.py: metrics.jsonl, steps.jsonl, plots, the printed epoch line
      checkpoint        CheckpointSaver.save: best.pt when improved, last.pt always
      stop              after train.epochs, or patience epochs without a new best
    summary         the best epoch's record -> summary.json

Rank 0 writes every file. ``train_step`` (``step.py``) is the one step function: this loop, ``lsdc
profile`` and ``lsdc bench step`` all call it.
"""
from __future__ import annotations

import dataclasses
import os
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core.config import Config
from ..core.errors import InputError
from ..core.schema import VIEWS
from ..loaders.factory import create_loader
from ..metric.baselines import fold_priors
from ..metric.classification import epoch_metrics
from ..store.reader import read_index, store_preprocess_config
from . import distributed as dist
from . import report
from .checkpoint import LAST_FILE, CheckpointSaver
from .device import resolve_device
from .epoch import train_one_epoch
from .evaluate import FoldData, validate
from .fold_log import METRICS_FILE, FoldLog, metrics_record
from .folds import assign_folds
from .step import build_step

PRED_COLUMNS = ("row", "study_id", "condition", "level", "label", "p0", "p1", "p2", "fold")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def with_store_spec(cfg: Config, store) -> Config:
    """The Config with the store's crop spec (the store defines it; a config never restates it)."""
    return dataclasses.replace(cfg, preprocess=store_preprocess_config(store))


def train(cfg: Config, store, view: str, fold: int, out_dir, resume: bool = False) -> dict:
    """Train one fold of one view; returns the best epoch's summary (balanced_accuracy, recall,
    score and its terms, confusion, best_epoch, ...). Writes OUT_DIR/config.yaml and OUT_DIR/fold{K}/."""
    if view not in VIEWS:
        raise InputError(f"unknown view {view!r}; choose one of {VIEWS}")
    cfg = with_store_spec(cfg, store)
    tcfg = cfg.train
    kind = resolve_device(tcfg.device)
    d = dist.setup(kind)
    device = torch.device(kind, d.local_rank) if kind == "cuda" else torch.device("cpu")
    out_dir, fold_dir = Path(out_dir), Path(out_dir) / f"fold{fold}"
    if (fold_dir / "summary.json").is_file() and resume:
        return report.read_json(fold_dir / "summary.json")  # this fold finished before
    if (fold_dir / LAST_FILE).is_file() and not resume:
        raise InputError(f"{fold_dir} already holds a run; pass --resume to continue it or choose another --out")
    if d.main:
        fold_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(out_dir)

    seed_everything(tcfg.seed + d.rank)
    data = FoldData.of(store, view, fold, tcfg)
    with (create_loader(cfg, store, view, data.train_rows, train=True, rank=d.rank, world=d.world) as train_loader,
          create_loader(cfg, store, view, data.val_rows, train=False, rank=d.rank, world=d.world) as val_loader):
        steps_per_epoch = dist.min_int(min(len(train_loader), tcfg.max_steps_per_epoch or len(train_loader)), d, device)
        s = build_step(cfg, view, steps_per_epoch, device, d)
        backend = train_loader.backend
        meta = {"view": view, "fold": fold, "in_chans": cfg.loader.channels, "two_sided": s.two_sided}
        saver, log = CheckpointSaver(fold_dir, s, cfg, meta, d), FoldLog(fold_dir, view, fold, d.main)
        start_epoch, step = saver.resume() if resume and saver.last_path.is_file() else (0, 0)
        if start_epoch:
            log.truncate(start_epoch - 1)
        log.start(len(data.train_rows), len(data.val_rows), steps_per_epoch, tcfg.epochs, backend, device, d.world,
                  start_epoch)

        t_run, finished = time.perf_counter(), start_epoch >= tcfg.epochs or saver.out_of_patience(tcfg.patience)
        stop = start_epoch if finished else min(tcfg.epochs, start_epoch + (tcfg.epochs_per_run or tcfg.epochs))
        for epoch in range(start_epoch, stop):
            train_loader.set_epoch(epoch)
            st = train_one_epoch(s, train_loader, epoch, step, steps_per_epoch, d, f"{view} fold {fold} epoch {epoch}")
            step = st.step
            val, pred, ev = validate(s, val_loader, d, data, tcfg)
            improved = saver.update(epoch, val, tcfg.select_metric)
            rec = metrics_record(epoch, st, val, s, tcfg, backend, d.world, saver.best["epoch"])
            log.epoch(rec, st.lines, pred, ev, improved)
            saver.save(epoch, step, improved)
            finished = epoch == tcfg.epochs - 1 or saver.out_of_patience(tcfg.patience)
            if finished:
                break

    summary = _fold_summary(fold_dir / METRICS_FILE, saver.best, view, fold, time.perf_counter() - t_run, d)
    summary["finished"] = finished
    if d.main and finished:  # a fold stopped by epochs_per_run is resumed, not skipped
        report.write_json(fold_dir / "summary.json", summary)
    dist.barrier(d)
    return summary


def _fold_summary(metrics_path: Path, best: dict, view: str, fold: int, train_s: float, d: dist.Dist) -> dict:
    """The best epoch's record (all ranks read rank 0's metrics.jsonl after a barrier)."""
    dist.barrier(d)
    records = report.read_jsonl(metrics_path)
    rec = next(r for r in records if r["epoch"] == best["epoch"])
    keys = ("balanced_accuracy", "recall", "confusion", "dead_classes", "score", *report.view_terms(view),
            "prior", "ceiling", "skill", "val_loss", "samples_per_s")
    return {"view": view, "fold": fold, "best_epoch": best["epoch"], "gate_ok": best["gate_ok"],
            "epochs_run": len(records), "train_s": train_s, **{k: rec[k] for k in keys}}


def train_folds(cfg: Config, store, view: str, out_dir, resume: bool = False) -> dict:
    """Every fold, then OUT_DIR/oof.csv (each sample predicted by the fold that held it out, at that
    fold's best epoch) and the out-of-fold metrics in OUT_DIR/summary.json."""
    folds = []
    for k in range(cfg.train.folds):
        folds.append(train(cfg, store, view, k, out_dir, resume))
        if not folds[-1]["finished"]:  # stopped by train.epochs_per_run: --resume carries on
            return {"view": view, "folds": folds, "oof": None}
    out_dir = Path(out_dir)
    oof = pd.concat([pd.read_csv(out_dir / f"fold{k}" / "predictions.csv") for k in range(cfg.train.folds)])
    oof = oof.sort_values("row").reset_index(drop=True)[list(PRED_COLUMNS)]
    m = epoch_metrics(oof["label"], oof[["p0", "p1", "p2"]].to_numpy(), cfg.train.min_recall)
    score = report.view_score(view, oof)
    index = read_index(store, view)
    priors = fold_priors(index, assign_folds(index, cfg.train.folds, cfg.train.seed))
    refs = report.references(view, oof, score, priors, report.oracle_of(store))
    summary = {"view": view, "folds": folds, "oof": {**score, **m, "samples": len(oof), **refs}}
    if int(os.environ.get("RANK", "0")) == 0:
        oof.to_csv(out_dir / "oof.csv", index=False)
        report.write_json(out_dir / "summary.json", summary)
        sk = refs["skill"]["score"]
        print(f"{view} out-of-fold over {cfg.train.folds} folds: BA {m['balanced_accuracy']:.3f} "
              f"score {score['score']:.4f} (prior {refs['prior']['score']:.4f}"
              + (f", ceiling {refs['ceiling']['score']:.4f}, skill {sk:.3f})" if sk is not None else ")"), flush=True)
    return summary
