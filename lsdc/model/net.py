"""The seed's v9 classifier: a 2D timm backbone per slice -> BiGRU over slices -> attention MIL.

One sample is a short stack of slices around one (study, level[, side]) crop. The backbone sees all
B*S slices as one batch; a bidirectional GRU mixes neighbouring slices; attention pooling (Ilse et
al. 2018) weighs the slices; a level embedding (and, on two-sided views, a side embedding) is
concatenated before the head. Left and right crops of a two-sided view share the model and the side
is an input, so no image flip (and no left/right label swap) is needed.

channels_last: the model is layout-agnostic. The backbone sees ``x.flatten(0, 1)``, a view, so an
input made by :func:`channels_last_5d` (or any permuted (B, S, H, W, C) buffer) reaches the
backbone as channels-last NCHW; convert the module itself with ``model.to(memory_format=...)``.

Backbone weights: random by default; timm's own (``pretrained``: downloaded from the Hugging Face
hub once, then cached); or a local file (``checkpoint_path``: safetensors or a torch pickle), which
wins over ``pretrained``. Weights that cannot be had are one :class:`InputError`.
"""
from __future__ import annotations

import importlib
import logging
import pickle
from pathlib import Path

import huggingface_hub
import timm
import torch
from torch import nn

try:  # huggingface_hub >= 0.23
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled
except ImportError:  # older releases export them from utils
    from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled

from lsdc.core.config import ModelConfig, TrainConfig
from lsdc.core.errors import InputError
from lsdc.core.schema import LEVELS

log = logging.getLogger(__name__)
NUM_CLASSES = 3
HEAD_HIDDEN = 512
WAYS_OUT = ("pass --checkpoint_path=FILE (a local .safetensors, .pth or .bin weights file) "
            "or --pretrained=false (random init)")


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What ``timm.create_model(name, pretrained=True)`` raises when the weights cannot be fetched.

    Measured with huggingface_hub 2.4 / timm 1.0.31: with ``HF_HUB_OFFLINE=1`` and with no route to
    the hub alike, hf_hub_download ends in ``LocalEntryNotFoundError`` (an ``EntryNotFoundError`` and
    a ``FileNotFoundError``; the cause is ``OfflineModeIsEnabled`` or the transport's ConnectError).
    Also caught: ``OfflineModeIsEnabled`` itself, ``HfHubHTTPError`` (repository missing, gated, 401
    from a proxy, 5xx), ``OSError`` (timeouts, refused connections, requests' errors, urllib's
    URLError for timm's few URL-hosted weights, an unwritable cache) and the httpx ``TransportError``
    of a failed download, which is not an OSError (huggingface_hub >= 1.0 talks httpx).
    """
    errors: list[type[BaseException]] = [EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled, OSError]
    for mod in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(mod).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


HUB_ERRORS = _hub_errors()


def _root_cause(e: BaseException) -> BaseException:
    seen = {id(e)}
    while (nxt := e.__cause__ or e.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        e = nxt
    return e


def _hub_offline() -> bool:
    c = huggingface_hub.constants
    return bool(c.is_offline_mode() if hasattr(c, "is_offline_mode") else getattr(c, "HF_HUB_OFFLINE", False))


def create_backbone(cfg: ModelConfig, in_chans: int = 3) -> nn.Module:
    """The timm backbone (``num_classes=0``: pooled features), its weights as ``cfg`` asks.

    ``pretrained`` and no ``checkpoint_path``: timm's own weights via ``timm.create_model(name,
    pretrained=True)``, which downloads them from the Hugging Face hub into the huggingface_hub cache
    (``HF_HOME``, default ~/.cache/huggingface) on first use and reads the cache afterwards. Weights
    that cannot be had (offline, ``HF_HUB_OFFLINE=1`` and not cached, a model timm has no weights
    for) are one :class:`InputError` naming the backbone and the ways out. With ``checkpoint_path``
    set the backbone starts random and :func:`create_model` loads the file: nothing is downloaded.
    """
    name = cfg.backbone
    if not name.startswith(("hf-hub:", "hf_hub:", "local-dir:")):  # timm resolves those itself
        if not timm.is_model(name):
            raise InputError(f"backbone {name!r}: not a timm model name (see timm.list_models())")
        if cfg.pretrained and not cfg.checkpoint_path and not timm.list_pretrained(name):
            raise InputError(f"backbone {name!r}: timm has no pretrained weights for it; {WAYS_OUT}")
    pretrained = cfg.pretrained and not cfg.checkpoint_path
    if cfg.pretrained and cfg.checkpoint_path:
        log.info("backbone %s: checkpoint_path is set, so timm's pretrained weights are not fetched", name)
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, in_chans=in_chans)
    except HUB_ERRORS as e:
        if not pretrained and not name.startswith(("hf-hub:", "hf_hub:")):
            raise  # nothing was to be fetched: not a download problem
        root = _root_cause(e)
        if isinstance(root, OfflineModeIsEnabled) or (
                _hub_offline() and isinstance(e, (EntryNotFoundError, OfflineModeIsEnabled))):
            why = "HF_HUB_OFFLINE is set"
        else:
            first = (str(root).strip().splitlines() or [""])[0]
            why = f"{type(root).__name__}: {first[:160]}" if first else type(root).__name__
        raise InputError(f"backbone {name!r}: timm's pretrained weights are not in the local cache and "
                         f"cannot be downloaded from the Hugging Face hub ({why}); {WAYS_OUT}") from e


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
        self.backbone = create_backbone(cfg, in_chans=in_chans)
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
    """The v9 model. Backbone weights: ``cfg.checkpoint_path`` when set (a local file, nothing is
    downloaded even with ``cfg.pretrained``), else timm's hub weights when ``cfg.pretrained``, else
    random (see :func:`create_backbone`)."""
    model = SliceMIL(cfg, in_chans=in_chans, two_sided=two_sided)
    if cfg.checkpoint_path:
        load_backbone(model.backbone, cfg.checkpoint_path)
    return model


WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")  # timm's load_checkpoint order (EMA first)
STRIP_PREFIXES = ("module.", "_orig_mod.")  # DDP, torch.compile; stripped wherever they stack


def _is_safetensors(path: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then a JSON header."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return (len(head) == 9 and head[8:9] == b"{"
            and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size)


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: safetensors, or a torch pickle (.pth, .pt, .bin) read with
    ``weights_only=True``; a dict nested under state_dict_ema / model_ema / state_dict / model is
    unwrapped (EMA first, as timm's ``load_checkpoint`` does), non-tensor entries are dropped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: backbone checkpoint not found")
    if _is_safetensors(path):
        import safetensors.torch  # a dependency of timm
        try:
            sd = safetensors.torch.load_file(str(path), device="cpu")
        except (safetensors.SafetensorError, OSError, ValueError) as e:
            raise InputError(f"{path}: not a readable safetensors file ({e})") from e
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, OSError, ValueError) as e:
            # what torch.load raises on a file that is not a torch pickle (KeyError: a text file) or
            # one that needs arbitrary classes (UnpicklingError under weights_only)
            first = (str(e).strip().splitlines() or [""])[0][:160]
            raise InputError(f"{path}: not a torch weights file that loads with weights_only=True "
                             f"({type(e).__name__}: {first})") from e
    for _ in range(3):
        key = next((k for k in WRAPPER_KEYS if isinstance(sd, dict) and isinstance(sd.get(k), dict)), None)
        if key is None:
            break
        log.debug("%s: reading the state dict under %r", path, key)
        sd = sd[key]
    if not isinstance(sd, dict):
        raise InputError(f"{path}: holds a {type(sd).__name__}, not a state dict of tensors")
    return {str(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _strip_prefixes(k: str) -> str:
    while k.startswith(STRIP_PREFIXES):  # in any order: DDP(compiled) or compiled(DDP)
        k = k.split(".", 1)[1]
    return k


def _arch(backbone: nn.Module) -> str:
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(backbone).__name__


def load_backbone(backbone: nn.Module, path) -> int:
    """Load backbone weights from a local file; returns the number of tensors loaded.

    Reads what :func:`read_state_dict` reads (timm / Hugging Face ``.safetensors``, ``.pth``,
    ``.bin``, ``.pt``, nested or not). ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes
    are stripped, stacked in any order; when ``backbone.``-prefixed keys exist (a whole saved SliceMIL) only those are
    kept, prefix removed. A first-conv weight saved for another channel count is adapted as timm
    does. Tensors the backbone lacks (a classifier head: the backbone has num_classes=0) are skipped
    and reported in a log line; no match at all, or a shape that differs, is an :class:`InputError`.
    """
    path = Path(path)
    sd = read_state_dict(path)
    n_file = len(sd)
    sd = {_strip_prefixes(k): v for k, v in sd.items()}
    if any(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    own = backbone.state_dict()
    matched = [k for k in sd if k in own]
    if not matched:
        raise InputError(f"{path}: no tensor matches the backbone {_arch(backbone)!r} (0 of the file's "
                         f"{n_file} tensors matched; file keys like {next(iter(sd), None)!r}, backbone keys "
                         f"like {next(iter(own), None)!r}); is it a weights file for this --backbone?")
    bad = []
    for k in matched:
        v = sd[k]
        if v.shape != own[k].shape:
            if v.ndim == 4 and v.shape[0] == own[k].shape[0] and v.shape[2:] == own[k].shape[2:]:
                sd[k] = timm.models.adapt_input_conv(own[k].shape[1], v)  # other in_chans
            else:
                bad.append(k)
    if bad:
        k = bad[0]
        raise InputError(f"{path}: tensor {k!r} has shape {tuple(sd[k].shape)} in the file but "
                         f"{tuple(own[k].shape)} in the backbone {_arch(backbone)!r} ({len(bad)} of "
                         f"{len(matched)} matching keys differ in shape); is it a weights file for this --backbone?")
    skipped = [k for k in sd if k not in own]
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    backbone.load_state_dict({k: sd[k] for k in matched}, strict=False)
    msg = ("backbone: loaded %d/%d tensors from %s; skipped %d the backbone lacks%s; %d left at their init%s"
           % (len(matched), len(own), path, len(skipped), f" (e.g. {skipped[0]})" if skipped else "",
              len(missing), f" (e.g. {missing[0]})" if missing else ""))
    (log.warning if missing else log.info)(msg)
    return len(matched)


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
