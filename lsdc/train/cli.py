"""`lsdc train STORE --view V --fold K|all --out RUN_DIR [--config cfg.yaml] [--resume] [--key=value ...]`

Trains the slice-stack classifier of one view on the store's crops (the crop spec comes from the
store). ``--fold K`` trains fold K; ``--fold all`` trains every fold and writes RUN_DIR/oof.csv and the
out-of-fold score. Under ``torchrun --nproc_per_node=N -m lsdc.core.cli train ...`` each rank trains
on its shard (DDP; NCCL on GPU, gloo on CPU) and only rank 0 writes.

RUN_DIR/config.yaml          the resolved config
RUN_DIR/fold{K}/metrics.jsonl one object per epoch (losses, balanced accuracy, recalls, confusion,
                             score of this view's official terms, samples/s, data vs compute time, lr)
RUN_DIR/fold{K}/steps.jsonl  per step: loss, lr, data-wait and compute seconds
RUN_DIR/fold{K}/{last,best}.pt, predictions.csv (best epoch), summary.json, curves.png,
                             confusion.png, attention.png
"""
from __future__ import annotations

import argparse
import os

from ..core.errors import InputError
from ..core.overrides import accept_overrides, load_config
from ..core.schema import VIEWS


def configure(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = __doc__
    p.add_argument("store", help="the store written by `lsdc preprocess`")
    p.add_argument("--view", required=True, choices=VIEWS)
    p.add_argument("--fold", default="0", help="fold number, or 'all' for every fold and the OOF predictions")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--config", default=None, help="YAML config file")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/fold{K}/last.pt (finished folds are kept)")
    accept_overrides(p, ("train", "model", "loader"))


def run(args) -> int:
    from . import distributed
    from .loop import train, train_folds

    cfg = load_config(args.config, args.overrides)
    try:
        if args.fold == "all":
            out = train_folds(cfg, args.store, args.view, args.out, args.resume)
            res = out["oof"] or out["folds"][-1]  # None while a fold is unfinished (train.epochs_per_run)
        else:
            try:
                fold = int(args.fold)
            except ValueError:
                raise InputError(f"--fold must be a number or 'all', got {args.fold!r}") from None
            res = train(cfg, args.store, args.view, fold, args.out, args.resume)
    finally:
        distributed.cleanup()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"balanced accuracy {res['balanced_accuracy']:.4f}  recall {[round(r, 4) for r in res['recall']]}  "
              f"score ({args.view} terms) {res['score']:.4f}")
    return 0
