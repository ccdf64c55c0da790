"""Training losses: class-weighted CE, a differentiable any-severe term, the v4 auxiliary heads.

Targets are class codes 0 Normal/Mild, 1 Moderate, 2 Severe, and ``BLANK`` (-1) for unlabelled cells,
which every loss here ignores. All losses are computed in float32 whatever the autocast dtype. A batch
with no labelled row gives a zero loss that still backpropagates (never NaN).

No loss reads a value back to the host (no ``.any()`` in an ``if``, no data-dependent shapes), so a
training step never waits for the device: rows are selected by masks and weights, never by indexing.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lsdc.core.config import TrainConfig
from lsdc.core.schema import BLANK, SEVERITY_WEIGHTS

SEVERE = 2
_LOG_ONE_MINUS_EPS = math.log1p(-1e-6)  # caps p(severe) at 1 - 1e-6 inside log(1 - p)


def _masked_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum(weight * values) / sum(weight); 0 (still backpropagating) when every weight is 0."""
    return (weight * values).sum() / weight.sum().clamp(min=torch.finfo(values.dtype).tiny)


def class_weighted_ce(logits: torch.Tensor, target: torch.Tensor, class_weights) -> torch.Tensor:
    """sum_i w[y_i] * CE_i / sum_i w[y_i] over rows with y_i != -1 (torch's weighted mean).

    torch's mean is 0/0 = NaN on a batch with no labelled row; that NaN becomes 0, and its gradient
    is 0 (every row is ignored), without asking the device whether the batch had a label.
    """
    logits = logits.float()
    w = torch.as_tensor(class_weights, dtype=torch.float32, device=logits.device)
    return torch.nan_to_num(F.cross_entropy(logits, target, weight=w, ignore_index=BLANK), nan=0.0)


def any_severe_loss(logits: torch.Tensor, target: torch.Tensor, study_ids) -> torch.Tensor:
    """The metric's any-severe-spinal term, made differentiable over one batch.

    Training version: rows are grouped by study id *within the batch* (a study's other levels
    outside this batch are not seen). Per study: prediction = max over its labelled rows of the
    softmax severe probability (not renormalised), label = any of those rows Severe, weight = the
    largest row weight (1/2/4 by true class, as the metric, so 4 when positive); binary log loss,
    weighted mean over studies. Meant for spinal-canal rows only, as in the metric.
    """
    logits = logits.float()
    labelled = target != BLANK  # (B,)
    log_p = F.log_softmax(logits, dim=1)[:, SEVERE]  # (B,)
    ids = torch.as_tensor(study_ids, device=logits.device)
    same = ids[:, None] == ids[None, :]  # (B, B): row i's study holds row j
    member = same & labelled[None, :]  # (B, B): row i's study's labelled rows
    # each study once: its first labelled row stands for it (no data-dependent shapes, so no sync)
    earlier = torch.ones_like(same).tril(diagonal=-1)
    first = labelled & ~(member & earlier).any(dim=1)  # (B,)
    log_p_study = log_p[None, :].masked_fill(~member, float("-inf")).amax(dim=1)  # (B,)
    y = (member & (target == SEVERE)[None, :]).any(dim=1)  # (B,)
    row_w = torch.as_tensor(SEVERITY_WEIGHTS, device=logits.device)[target.clamp(min=0)]  # (B,)
    w = (row_w[None, :] * member).amax(dim=1) * first  # (B,): 0 but on each study's first row
    neg = -torch.log1p(-torch.exp(log_p_study.clamp(max=_LOG_ONE_MINUS_EPS)))
    bce = torch.where(y, -log_p_study, neg)
    return _masked_mean(torch.where(first, bce, torch.zeros_like(bce)), w)


def aux_losses(out: dict, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """BCE of the v4 heads: normal-vs-abnormal on all labelled rows (abnormal = Moderate or
    Severe), moderate-vs-severe on abnormal rows only. Returns {"aux_abnormal", "aux_severe"}."""
    res = {}
    for key, rows, positive in (("aux_abnormal", target != BLANK, target >= 1),
                                ("aux_severe", target >= 1, target == SEVERE)):
        z = out[key].float()
        bce = F.binary_cross_entropy_with_logits(z, positive.float(), reduction="none")
        res[key] = _masked_mean(bce, rows.float())
    return res


def total_loss(out: dict, target: torch.Tensor, tcfg: TrainConfig, study_ids=None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CE(class_weights) + any_severe_weight * any-severe + aux_weight * (both aux BCEs).

    The any-severe term is added only when ``tcfg.any_severe_weight > 0`` and ``study_ids`` is
    given (pass them for spinal-canal batches only); the aux terms whenever ``out`` holds aux logits
    (even at weight 0, so DDP sees every parameter used). ``parts`` holds detached scalar tensors
    (call ``.item()`` when logging, not every step, to avoid a device sync).
    """
    ce = class_weighted_ce(out["logits"], target, tcfg.class_weights)
    loss, parts = ce, {"ce": ce.detach()}
    if tcfg.any_severe_weight > 0 and study_ids is not None:
        s = any_severe_loss(out["logits"], target, study_ids)
        loss = loss + tcfg.any_severe_weight * s
        parts["any_severe"] = s.detach()
    if "aux_abnormal" in out:
        aux = aux_losses(out, target)
        loss = loss + tcfg.aux_weight * (aux["aux_abnormal"] + aux["aux_severe"])
        parts.update({k: v.detach() for k, v in aux.items()})
    parts["loss"] = loss.detach()
    return loss, parts
