"""One training epoch (timm's ``train_one_epoch``): the step loop of ``train`` (loop.py).

No host-device sync per step: each step's loss stays a detached device tensor, and the losses come
back to the host together, one ``torch.stack(...).tolist()`` every ``LOG_EVERY`` steps and at the
epoch's end (as nanoGPT reads its loss only at ``log_interval``). ``data_s`` is the host time spent
waiting for the next batch, ``compute_s`` the host time of the step (which includes a read-back's
wait on the steps it collects); the progress bar shows the loss at those read-backs only.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.progress import progress_bar
from . import distributed as dist
from .step import Step, loader_batches, train_step

LOG_EVERY = 20  # steps between read-backs of the losses (one host-device transfer each)
DEBUG_ROWS_ENV = "LSDC_DEBUG_ROWS"  # a directory: each rank appends "epoch row" lines to rows_rank{R}.txt


@dataclass
class EpochStats:
    """What one epoch of training did (rank-local)."""
    step: int  # optimiser steps taken so far, over every epoch
    lines: list = field(default_factory=list)  # steps.jsonl records: epoch, step, loss, data_s, compute_s, lr
    samples: int = 0
    data_s: float = 0.0
    compute_s: float = 0.0
    train_loss: float = 0.0  # mean step loss: the host floats summed in step order / steps


def read_back(pending: list) -> list[float]:
    """The pending detached loss tensors as Python floats, in one device-to-host transfer; empties ``pending``."""
    if not pending:
        return []
    values = torch.stack(pending).tolist()
    pending.clear()
    return values


def train_one_epoch(s: Step, loader, epoch: int, step: int, steps_per_epoch: int, d: dist.Dist,
                    desc: str = "", log_every: int | None = None) -> EpochStats:
    """``steps_per_epoch`` optimiser steps on ``loader`` (fewer if it runs dry); ``step`` counts on from
    the steps taken before this epoch; losses are read back every ``log_every`` (LOG_EVERY) steps.
    The loader's epoch is set by the caller."""
    log_every = log_every or LOG_EVERY
    s.model.train()
    st, losses, pending, seen = EpochStats(step), [], [], []
    debug_dir = os.environ.get(DEBUG_ROWS_ENV)
    it = loader_batches(loader)
    bar = progress_bar(total=steps_per_epoch, desc=desc, disable=not d.main, leave=False)
    for _ in range(steps_per_epoch):
        t0 = time.perf_counter()
        batch = next(it, None)
        if batch is None:  # the loader yielded fewer batches than len() promised
            break
        t1 = time.perf_counter()
        pending.append(train_step(s, batch)["loss"])  # a detached device tensor: no sync here
        logged = len(pending) >= log_every
        if logged:
            losses += read_back(pending)  # the one host-device sync of these log_every steps
        t2 = time.perf_counter()
        st.step += 1
        st.lines.append({"epoch": epoch, "step": st.step, "loss": None, "data_s": t1 - t0, "compute_s": t2 - t1,
                         "lr": s.scheduler.get_last_lr()[0]})
        st.samples += len(batch["label"])
        st.data_s, st.compute_s = st.data_s + t1 - t0, st.compute_s + t2 - t1
        if logged:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", sps=f"{st.samples / (st.data_s + st.compute_s):.0f}")
        if debug_dir:
            seen += [f"{epoch} {r}" for r in batch["row"].tolist()]
        bar.update()
    losses += read_back(pending)
    bar.close()
    if debug_dir:
        with open(Path(debug_dir) / f"rows_rank{d.rank}.txt", "a") as f:
            f.write("".join(r + "\n" for r in seen))
    loss_sum = 0.0
    for line, loss in zip(st.lines, losses):  # in step order, as a running float sum
        line["loss"] = loss
        loss_sum += loss
    st.train_loss = loss_sum / max(1, len(st.lines))
    return st
