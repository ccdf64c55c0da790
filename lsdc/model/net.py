"""The seed's v9 classifier: a 2D timm backbone per slice -> BiGRU over slices -> attention MIL.

One sample is a short stack of slices around one (study, level[, side]) crop. The backbone sees all
B*S slices as one batch; a bidirectional GRU mixes neighbouring slices; attention pooling (Ilse et
al. 2018) weighs the slices; a level embedding (and, on two-sided views, a side embedding) is
concatenated before the head. Left and right crops of a two-sided view share the model and the side
is an input, so no image flip (and no left/right label swap) is needed.

channels_last: the model is layout-agnostic. The backbone sees ``x.flatten(0, 1)``, a view, so an
input made by :func:`channels_last_5d` (or any permuted (B, S, H, W, C) buffer) reaches the
backbone as channels-last NCHW; convert the module itself with ``model.to(memory_format=...)``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from torch import nn

from lsdc.core.config import ModelConfig, TrainConfig
from lsdc.core.errors import InputError
from lsdc.core.schema import LEVELS

log = logging.getLogger(__name__)
NUM_CLASSES = 3
HEAD_HIDDEN = 512


class AttentionMIL(nn.Module):
    """a_s = softmax_s(w . tanh(W1 h_s)), or gated: w . (tanh(V h_s) * sigmoid(U h_s))."""

    def __init__(self, dim: int, attn_dim: int, gated: bool):
        super().__init__()
        self.V = nn.Linear(dim, attn_dim)
        self.U = nn.Linear(dim, attn_dim) if gated else None
        self.w = nn.Linear(attn_dim, 1, bias=False)  # a bias cancels in the softmax

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # h: (B, S, D)
        e = torch.tanh(self.V(h))
        if self.U is not None:
            e = e * torch.sigmoid(self.U(h))
        a = torch.softmax(self.w(e).squeeze(-1).float(), dim=1)  # (B, S), float32 under autocast
        z = torch.einsum("bs,bsd->bd", a.to(h.dtype), h)  # (B, D)
        return z, a


class SliceMIL(nn.Module):
    def __init__(self, cfg: ModelConfig, in_chans: int = 3, two_sided: bool = False):
        super().__init__()
        self.two_sided = two_sided
        self.backbone = timm.create_model(cfg.backbone, pretrained=cfg.pretrained, num_classes=0,
                                          in_chans=in_chans)
        self.proj = nn.Linear(self.backbone.num_features, cfg.proj_dim)
        self.gru = nn.GRU(cfg.proj_dim, cfg.gru_hidden, num_layers=cfg.gru_layers, batch_first=True,
                          bidirectional=True, dropout=cfg.gru_dropout if cfg.gru_layers > 1 else 0.0)
        self.attn = AttentionMIL(2 * cfg.gru_hidden, cfg.attn_dim, gated=cfg.attention == "gated")
        self.level_emb = nn.Embedding(len(LEVELS), cfg.level_emb_dim)
        self.side_emb = nn.Embedding(2, cfg.level_emb_dim) if two_sided else None  # 0 left, 1 right
        feat = 2 * cfg.gru_hidden + cfg.level_emb_dim * (2 if two_sided else 1)
        self.head = nn.Sequential(
            nn.LayerNorm(feat), nn.Dropout(cfg.head_dropout), nn.Linear(feat, HEAD_HIDDEN), nn.GELU(),
            nn.Dropout(cfg.head_dropout), nn.Linear(HEAD_HIDDEN, NUM_CLASSES))
        self.aux_abnormal = nn.Linear(feat, 1) if cfg.aux_heads else None
        self.aux_severe = nn.Linear(feat, 1) if cfg.aux_heads else None

    def forward(self, x: torch.Tensor, level: torch.Tensor, side: torch.Tensor | None = None) -> dict:
        """x: (B, S, C, H, W) float; level: (B,) int in 0..4; side: (B,) int, 0 left / 1 right.

        Returns {"logits": (B, 3), "attention": (B, S)} plus "aux_abnormal", "aux_severe" (B,)
        logits when the auxiliary heads are on.
        """
        B, S = x.shape[:2]
        f = self.backbone(x.flatten(0, 1))  # (B*S, F)
        h, _ = self.gru(self.proj(f).view(B, S, -1))  # (B, S, 2*hidden)
        z, a = self.attn(h)  # (B, 2*hidden), (B, S)
        parts = [z, self.level_emb(level).to(z.dtype)]
        if self.two_sided:
            if side is None:
                raise ValueError("a two-sided model needs side (0 = left, 1 = right)")
            parts.append(self.side_emb(side).to(z.dtype))
        feat = torch.cat(parts, dim=1)  # (B, feat)
        out = {"logits": self.head(feat), "attention": a}
        if self.aux_abnormal is not None:
            out["aux_abnormal"] = self.aux_abnormal(feat).squeeze(1)
            out["aux_severe"] = self.aux_severe(feat).squeeze(1)
        return out


def create_model(cfg: ModelConfig, in_chans: int = 3, two_sided: bool = False) -> SliceMIL:
    """The v9 model; backbone weights from ``cfg.checkpoint_path`` when set (nothing downloaded)."""
    model = SliceMIL(cfg, in_chans=in_chans, two_sided=two_sided)
    if cfg.checkpoint_path:
        load_backbone(model.backbone, cfg.checkpoint_path)
    return model


def load_backbone(backbone: nn.Module, path) -> int:
    """Load backbone weights from a local file; returns the number of tensors loaded.

    Accepts a plain state_dict, ``{"state_dict": ...}`` or ``{"model": ...}``; a ``module.`` prefix
    (DDP) and a ``backbone.`` prefix (a whole saved SliceMIL) are stripped. A first-conv weight saved
    for another channel count is adapted as timm does. Extra keys (a classifier) are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: backbone checkpoint not found")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for k in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(k), dict):
            sd = sd[k]
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if any(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    own = backbone.state_dict()
    bad = []
    for k, v in list(sd.items()):
        if k in own and v.shape != own[k].shape:
            if v.ndim == 4 and v.shape[0] == own[k].shape[0] and v.shape[2:] == own[k].shape[2:]:
                sd[k] = timm.models.adapt_input_conv(own[k].shape[1], v)  # other in_chans
            else:
                bad.append(f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}")
    if bad:
        raise InputError(f"{path}: shapes do not match the backbone: {', '.join(bad[:5])}")
    loaded = sum(k in own for k in sd)
    if loaded == 0:
        raise InputError(f"{path}: no tensor matches the backbone "
                         f"({len(sd)} keys, e.g. {next(iter(sd), None)!r})")
    res = backbone.load_state_dict(sd, strict=False)
    log.info("backbone: loaded %d/%d tensors from %s (%d missing)", loaded, len(own), path,
             len(res.missing_keys))
    return loaded


def channels_last_5d(x: torch.Tensor) -> torch.Tensor:
    """(B, S, C, H, W) with strides such that ``x.flatten(0, 1)`` is channels-last NCHW."""
    return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


def param_groups(model: SliceMIL, tcfg: TrainConfig) -> list[dict]:
    """AdamW groups: backbone / middle (projection, GRU, attention, embeddings) / head (+ aux).

    Biases and norm weights (every tensor with ndim <= 1) get no weight decay, the usual practice:
    decaying them only shrinks scales and shifts the optimiser must then relearn.
    Each group carries a "name"; learning-rate schedules should scale each group's own peak lr.
    """
    parts = {"backbone": (tcfg.backbone_lr, tcfg.weight_decay), "middle": (tcfg.lr, tcfg.weight_decay),
             "head": (tcfg.lr, tcfg.head_weight_decay)}
    buckets: dict[tuple[str, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        top = name.split(".", 1)[0]
        part = ("backbone" if top == "backbone" else
                "head" if top in ("head", "aux_abnormal", "aux_severe") else "middle")
        buckets.setdefault((part, p.ndim > 1), []).append(p)
    groups = []
    for (part, decay), params in buckets.items():
        lr, wd = parts[part]
        groups.append({"name": f"{part}{'' if decay else '_no_decay'}", "params": params, "lr": lr,
                       "weight_decay": wd if decay else 0.0})
    return groups


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
