"""Training losses: class-weighted CE, a differentiable any-severe term, the v4 auxiliary heads.

Targets are class codes 0 Normal/Mild, 1 Moderate, 2 Severe, and ``BLANK`` (-1) for unlabelled cells,
which every loss here ignores. All losses are computed in float32 whatever the autocast dtype. A batch
with no labelled row gives a zero loss that still backpropagates (never NaN).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lsdc.core.config import TrainConfig
from lsdc.core.schema import BLANK, SEVERITY_WEIGHTS

SEVERE = 2
_LOG_ONE_MINUS_EPS = math.log1p(-1e-6)  # caps p(severe) at 1 - 1e-6 inside log(1 - p)


def _zero(t: torch.Tensor) -> torch.Tensor:
    return t.sum() * 0.0  # keeps the graph, so every parameter still gets a (zero) gradient


def class_weighted_ce(logits: torch.Tensor, target: torch.Tensor, class_weights) -> torch.Tensor:
    """sum_i w[y_i] * CE_i / sum_i w[y_i] over rows with y_i != -1 (torch's weighted mean)."""
    logits = logits.float()
    if not (target != BLANK).any():
        return _zero(logits)
    w = torch.as_tensor(class_weights, dtype=torch.float32, device=logits.device)
    return F.cross_entropy(logits, target, weight=w, ignore_index=BLANK)


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
    if not labelled.any():
        return _zero(logits)
    log_p = F.log_softmax(logits, dim=1)[:, SEVERE]  # (B,)
    ids = torch.as_tensor(study_ids, device=logits.device)
    _, group = torch.unique(ids, return_inverse=True)  # (B,)
    member = group[None, :] == torch.arange(int(group.max()) + 1, device=logits.device)[:, None]
    member = member & labelled[None, :]
    member = member[member.any(dim=1)]  # (G, B) studies with a labelled row
    log_p_study = log_p[None, :].masked_fill(~member, float("-inf")).amax(dim=1)  # (G,)
    y = (member & (target == SEVERE)[None, :]).any(dim=1)  # (G,)
    row_w = torch.as_tensor(SEVERITY_WEIGHTS, device=logits.device)[target.clamp(min=0)]  # (B,)
    w = (row_w[None, :] * member).amax(dim=1)  # (G,)
    neg = -torch.log1p(-torch.exp(log_p_study.clamp(max=_LOG_ONE_MINUS_EPS)))
    bce = torch.where(y, -log_p_study, neg)
    return (w * bce).sum() / w.sum()


def aux_losses(out: dict, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """BCE of the v4 heads: normal-vs-abnormal on all labelled rows (abnormal = Moderate or
    Severe), moderate-vs-severe on abnormal rows only. Returns {"aux_abnormal", "aux_severe"}."""
    res = {}
    for key, rows, positive in (("aux_abnormal", target != BLANK, target >= 1),
                                ("aux_severe", target >= 1, target == SEVERE)):
        z = out[key].float()
        res[key] = (F.binary_cross_entropy_with_logits(z[rows], positive[rows].float())
                    if rows.any() else _zero(z))
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
