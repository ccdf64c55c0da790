"""Training (nanoGPT style): one visible loop over epochs and steps, a few small helpers, no Trainer.

    for epoch:                       set_epoch, then per step: wait for a batch (data_s), train_step
      for step:                      (compute_s, device-synchronised), log
      evaluate the validation fold   gathered over ranks, each row once
      metrics, plots, checkpoints    rank 0 writes; best.pt by select_metric behind the dead-class gate
      early stopping                 patience epochs without a new best

The best-epoch rule and its dead-class gate are in ``evaluate.py``; ``train_step`` (``step.py``) is
the one step function: this loop, ``lsdc profile`` and ``lsdc bench step`` all call it.
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
from tqdm import tqdm

from ..core.config import Config
from ..core.errors import InputError
from ..core.schema import VIEWS
from ..metric.baselines import fit_prior, fold_priors
from ..metric.classification import epoch_metrics
from ..preprocess.store import read_index, store_preprocess_config
from . import checkpoint as ckpt_io
from . import distributed as dist
from . import report
from .evaluate import epoch_record, evaluate, is_better
from .folds import assign_folds, split_rows
from .step import build_step, loader_batches, resolve_device, train_step

PRED_COLUMNS = ("row", "study_id", "condition", "level", "label", "p0", "p1", "p2", "fold")
DEBUG_ROWS_ENV = "LSDC_DEBUG_ROWS"  # a directory: each rank appends "epoch row" lines to rows_rank{R}.txt


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def with_store_spec(cfg: Config, store) -> Config:
    """The Config with the store's crop spec (the store defines it; a config never restates it)."""
    return dataclasses.replace(cfg, preprocess=store_preprocess_config(store))


def train(cfg: Config, store, view: str, fold: int, out_dir, resume: bool = False, data_dir=None) -> dict:
    """Train one fold of one view; returns the best epoch's summary (balanced_accuracy, recall,
    score and its terms, confusion, best_epoch, ...). Writes OUT_DIR/config.yaml and OUT_DIR/fold{K}/."""
    from ..loaders.factory import create_loader  # the loader package lands beside this one

    if view not in VIEWS:
        raise InputError(f"unknown view {view!r}; choose one of {VIEWS}")
    cfg = with_store_spec(cfg, store)
    tcfg = cfg.train
    kind = resolve_device(tcfg)
    d = dist.setup(kind)
    device = torch.device(kind, d.local_rank) if kind == "cuda" else torch.device("cpu")
    out_dir, fold_dir = Path(out_dir), Path(out_dir) / f"fold{fold}"
    last_pt, best_pt, metrics_path = fold_dir / "last.pt", fold_dir / "best.pt", fold_dir / "metrics.jsonl"
    if (fold_dir / "summary.json").is_file() and resume:
        return report.read_json(fold_dir / "summary.json")  # this fold finished before
    if last_pt.is_file() and not resume:
        raise InputError(f"{fold_dir} already holds a run; pass --resume to continue it or choose another --out")
    if d.main:
        fold_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(out_dir)

    seed_everything(tcfg.seed + d.rank)
    index = read_index(store, view)
    train_rows, val_rows = split_rows(index, tcfg.folds, tcfg.seed, fold)
    prior, oracle = fit_prior(index.iloc[train_rows], report.PRIOR_PSEUDOCOUNT), report.oracle_of(store)
    train_loader = create_loader(cfg, store, view, train_rows, train=True, rank=d.rank, world=d.world, data_dir=data_dir)
    val_loader = create_loader(cfg, store, view, val_rows, train=False, rank=d.rank, world=d.world, data_dir=data_dir)
    steps_per_epoch = len(train_loader) if not tcfg.max_steps_per_epoch else min(len(train_loader), tcfg.max_steps_per_epoch)
    steps_per_epoch = dist.min_int(steps_per_epoch, d, device)
    s = build_step(cfg, view, steps_per_epoch, device, d)
    backend = getattr(train_loader, "backend", type(train_loader).__name__)
    meta = {"view": view, "fold": fold, "in_chans": cfg.loader.channels, "two_sided": s.two_sided}
    debug_dir = os.environ.get(DEBUG_ROWS_ENV)

    start_epoch, step, best, bad_epochs = 0, 0, None, 0
    if resume and last_pt.is_file():
        ck = ckpt_io.load(last_pt, map_location=device)
        ckpt_io.bare(s.model).load_state_dict(ck["model"])
        s.optimizer.load_state_dict(ck["optimizer"])
        s.scheduler.load_state_dict(ck["scheduler"])
        if s.scaler is not None and ck["scaler"] is not None:
            s.scaler.load_state_dict(ck["scaler"])
        start_epoch, step, best, bad_epochs = ck["epoch"] + 1, ck["step"], ck["best"], ck["bad_epochs"]
        rng = ck["rng"]
        ckpt_io.set_rng_state(rng[d.rank] if len(rng) == d.world else rng[0])
        if d.main:
            report.truncate_jsonl(metrics_path, ck["epoch"])
            report.truncate_jsonl(fold_dir / "steps.jsonl", ck["epoch"])
    if d.main:
        print(f"train {view} fold {fold}: {len(train_rows)} train / {len(val_rows)} val samples, "
              f"{steps_per_epoch} steps/epoch x {tcfg.epochs} epochs, backend={backend}, device={device}, "
              f"world={d.world}" + (f", resuming at epoch {start_epoch}" if start_epoch else ""), flush=True)

    t_run, finished = time.perf_counter(), start_epoch >= tcfg.epochs or bool(tcfg.patience and bad_epochs >= tcfg.patience)
    stop = start_epoch if finished else min(tcfg.epochs, start_epoch + (tcfg.epochs_per_run or tcfg.epochs))
    for epoch in range(start_epoch, stop):
        train_loader.set_epoch(epoch)
        s.model.train()
        data_s = compute_s = loss_sum = 0.0
        samples, step_log, seen = 0, [], []
        it = loader_batches(train_loader)
        bar = tqdm(total=steps_per_epoch, desc=f"{view} fold {fold} epoch {epoch}", disable=not d.main, leave=False)
        for i in range(steps_per_epoch):
            t0 = time.perf_counter()
            batch = next(it, None)
            if batch is None:  # the loader yielded fewer batches than len() promised
                break
            t1 = time.perf_counter()
            parts = train_step(s, batch)
            loss = parts["loss"].item()
            if device.type == "cuda":
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            step += 1
            n = len(batch["label"])
            data_s, compute_s, loss_sum, samples = data_s + t1 - t0, compute_s + t2 - t1, loss_sum + loss, samples + n
            step_log.append({"epoch": epoch, "step": step, "loss": loss, "data_s": t1 - t0, "compute_s": t2 - t1,
                             "lr": s.scheduler.get_last_lr()[0]})
            if debug_dir:
                seen += [f"{epoch} {r}" for r in batch["row"].tolist()]
            bar.set_postfix(loss=f"{loss:.3f}", sps=f"{samples / (data_s + compute_s):.0f}")
            bar.update()
        bar.close()
        del it
        if debug_dir:
            with open(Path(debug_dir) / f"rows_rank{d.rank}.txt", "a") as f:
                f.write("".join(r + "\n" for r in seen))

        ev = evaluate(s, val_loader, d)
        val, pred = epoch_record(view, ev, index, fold, tcfg)
        refs = report.references(view, pred, val, prior, oracle)
        val.update(prior=refs["prior"]["score"], ceiling=(refs["ceiling"] or {}).get("score"),
                   skill=refs["skill"]["score"])
        lrs = {g["name"]: lr for g, lr in zip(s.optimizer.param_groups, s.scheduler.get_last_lr())}
        rec = {"epoch": epoch, "step": step, "train_loss": loss_sum / max(1, len(step_log)), **val,
               "samples_per_s": samples * d.world / max(1e-9, data_s + compute_s), "data_s": data_s,
               "compute_s": compute_s, "data_s_per_step": data_s / max(1, len(step_log)),
               "compute_s_per_step": compute_s / max(1, len(step_log)), "data_wait_share": data_s / max(1e-9, data_s + compute_s),
               "lr": max(lrs.values()), "backbone_lr": lrs.get("backbone", 0.0), "min_recall": tcfg.min_recall,
               "backend": backend, "world": d.world}
        cand = {"epoch": epoch, "value": val[tcfg.select_metric], "gate_ok": not val["dead_classes"]}
        improved = is_better(cand, best, tcfg.select_metric)
        best, bad_epochs = (cand, 0) if improved else (best, bad_epochs + 1)
        rec["best_epoch"] = best["epoch"]
        rng = dist.gather(ckpt_io.rng_state(), d)  # every rank's, so a resumed DDP run continues exactly
        if d.main:
            report.append_jsonl(metrics_path, rec)
            for line in step_log:
                report.append_jsonl(fold_dir / "steps.jsonl", line)
            report.plot_curves(report.read_jsonl(metrics_path), fold_dir / "curves.png")
            state = dict(model=s.model, optimizer=s.optimizer, scheduler=s.scheduler, scaler=s.scaler, rng=rng,
                         epoch=epoch, step=step, best=best, bad_epochs=bad_epochs, cfg=cfg, meta=meta)
            if improved:
                ckpt_io.save(best_pt, **state)
                pred.to_csv(fold_dir / "predictions.csv", index=False)
                report.plot_confusion(val["confusion"], fold_dir / "confusion.png",
                                      f"{view} fold {fold} epoch {epoch}: BA {val['balanced_accuracy']:.3f}")
                report.plot_attention(ev["images"], ev["attention"][:len(ev["images"])], ev["label"], ev["probs"],
                                      fold_dir / "attention.png")
            ckpt_io.save(last_pt, **state)
            alarm = f"  DEAD CLASS {val['dead_classes']}" if val["dead_classes"] else ""
            print(f"{view} fold {fold} epoch {epoch}: train_loss {rec['train_loss']:.4f} val_loss {val['val_loss']:.4f} "
                  f"BA {val['balanced_accuracy']:.3f} recall {np.round(val['recall'], 3).tolist()} score "
                  f"{val['score']:.4f} (prior {val['prior']:.4f}"
                  + (f", skill {val['skill']:.3f}" if val["skill"] is not None else "") + ") | "
                  f"{rec['samples_per_s']:.1f} samples/s, data wait "
                  f"{100 * rec['data_wait_share']:.0f}%{' *best*' if improved else ''}{alarm}", flush=True)
        finished = epoch == tcfg.epochs - 1 or bool(tcfg.patience and bad_epochs >= tcfg.patience)
        if finished:
            break

    summary = _fold_summary(metrics_path, best, view, fold, time.perf_counter() - t_run, d)
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


def train_folds(cfg: Config, store, view: str, out_dir, resume: bool = False, data_dir=None) -> dict:
    """Every fold, then OUT_DIR/oof.csv (each sample predicted by the fold that held it out, at that
    fold's best epoch) and the out-of-fold metrics in OUT_DIR/summary.json."""
    folds = []
    for k in range(cfg.train.folds):
        folds.append(train(cfg, store, view, k, out_dir, resume, data_dir))
        if not folds[-1]["finished"]:  # stopped by train.epochs_per_run: --resume carries on
            return {"view": view, "folds": folds, "oof": None}
    out_dir = Path(out_dir)
    oof = pd.concat([pd.read_csv(out_dir / f"fold{k}" / "predictions.csv") for k in range(cfg.train.folds)])
    oof = oof.sort_values("row").reset_index(drop=True)[list(PRED_COLUMNS)]
    m = epoch_metrics(oof["label"], oof[["p0", "p1", "p2"]].to_numpy(), cfg.train.min_recall)
    score = report.view_score(view, oof)
    index = read_index(store, view)
    priors = fold_priors(index, assign_folds(index, cfg.train.folds, cfg.train.seed), report.PRIOR_PSEUDOCOUNT)
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
