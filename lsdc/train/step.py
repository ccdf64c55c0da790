"""The one training step, shared by the trainer, ``lsdc profile`` and ``lsdc bench step``.

``build_step`` makes the model (channels-last backbone), AdamW over ``param_groups`` (each group its
own peak lr and weight decay), a LambdaLR of linear warm-up then cosine to zero that scales every
group's peak, the autocast dtype (bf16 on GPU, float16 + GradScaler where bf16 is missing, off on
CPU) and the optional torch.compile / DDP wrappers. ``train_step`` runs one optimiser step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from ..core.config import Config, TrainConfig
from ..core.schema import SPINAL, VIEW_CONDITIONS, VIEW_SIDES
from ..model import channels_last_5d, create_model, param_groups, total_loss
from . import distributed as dist
from .schedule import lr_lambda


@dataclass
class Step:
    """Everything one training step touches (built once by :func:`build_step`)."""
    model: torch.nn.Module  # what trains: maybe compiled, maybe DDP-wrapped
    eval_model: torch.nn.Module  # the same weights without DDP (no collectives in evaluation)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    tcfg: TrainConfig
    device: torch.device
    amp_dtype: torch.dtype | None
    two_sided: bool
    spinal: bool  # add the any-severe term (spinal-canal view only)


def build_step(cfg: Config, view: str, steps_per_epoch: int, device: torch.device,
               d: dist.Dist = dist.Dist()) -> Step:
    """Model, AdamW over param_groups, warm-up + cosine LambdaLR, autocast dtype, DDP/compile wrappers."""
    tcfg = cfg.train
    two_sided = len(VIEW_SIDES[view]) == 2
    raw = create_model(cfg.model, in_chans=cfg.loader.channels, two_sided=two_sided).to(device)
    if tcfg.channels_last:
        raw.backbone.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(param_groups(raw, tcfg), fused=device.type == "cuda")
    total = tcfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(round(tcfg.warmup_epochs * steps_per_epoch), total))
    amp_dtype = None
    if tcfg.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    fwd = torch.compile(raw) if tcfg.compile else raw
    model = DDP(fwd, device_ids=[device.index] if device.type == "cuda" else None) if d.world > 1 else fwd
    return Step(model, fwd, opt, sched, scaler, tcfg, device, amp_dtype, two_sided, SPINAL in VIEW_CONDITIONS[view])


def model_inputs(s: Step, batch: dict):
    x = batch["image"].to(s.device, non_blocking=True)  # (B, S, C, H, W)
    if s.tcfg.channels_last:
        x = channels_last_5d(x)
    side = batch["side"].to(s.device) if s.two_sided else None
    return x, batch["level"].to(s.device), side


def train_step(s: Step, batch: dict) -> dict:
    """One optimiser step on one batch; returns the loss parts as detached tensors (no sync here)."""
    x, level, side = model_inputs(s, batch)
    y = batch["label"].to(s.device)
    with torch.autocast(s.device.type, dtype=s.amp_dtype or torch.float32, enabled=s.amp_dtype is not None):
        out = s.model(x, level, side)
    loss, parts = total_loss(out, y, s.tcfg, study_ids=batch["study_id"].to(s.device) if s.spinal else None)
    s.optimizer.zero_grad(set_to_none=True)
    if s.scaler is not None:
        s.scaler.scale(loss).backward()
        s.scaler.unscale_(s.optimizer)
    else:
        loss.backward()
    parts["grad_norm"] = torch.nn.utils.clip_grad_norm_(s.model.parameters(), s.tcfg.grad_clip)
    if s.scaler is not None:
        s.scaler.step(s.optimizer)
        s.scaler.update()
    else:
        s.optimizer.step()
    s.scheduler.step()
    return parts


def loader_batches(loader):
    """The loader's batches, fetched without touching torch's global RNG (dropout's). A DataLoader draws
    seeds from that RNG when an epoch starts, one more on a persistent-worker loader's first epoch than
    on later ones, so a resumed run would otherwise drift from an uninterrupted one."""
    it = iter(loader)
    while True:
        with torch.random.fork_rng(devices=[]):
            batch = next(it, None)
        if batch is None:
            return
        yield batch
