"""One augmentation draw per sample, applied alike to all its slices, and the math both backends share.

A sample's stored stack is uint8 [S_store, P, P] with P = ``spec.store_px``; the model sees
[S, C, out_px, out_px]. Per sample (never per slice, so the stack stays aligned):

    window  stored slices [slice_margin + shift, ... + slices)
    warp    out(d) = in(c_store + t + R(angle) (d - c_out) / scale), bilinear, border pixels repeated;
            d and the source point are pixel-centre coordinates (pixel j spans [j, j+1)), R rotates
            (x, y) by +angle, t = (tx_px, ty_px). Identity params give the exact centre crop.
    grey    y = clamp(0.5 + contrast (x/255 - 0.5) + brightness, 0, 1) ** gamma
    noise   y += noise_std * BANK[:, noise_y:noise_y + out_px, noise_x:noise_x + out_px]
    norm    channel k = (y - MEAN[k]) / STD[k]: ImageNet mean/std of the three grey copies when
            channels == 3, their averages (0.449, 0.226) when channels == 1.

The noise is a window of a fixed, seeded standard-normal bank picked by two drawn offsets, not fresh
per-pixel draws: DALI's CPU Gaussian generator alone cost ~2.1 ms a sample (more than every other op
together) on the 2-core host, and with a bank the noise is a pure function of the params, so the DALI
and torch backends produce the same numbers for the same draw. No flips: left/right are the patient's.
"""
from __future__ import annotations

import functools

import numpy as np

from ..core.config import CropSpec, LoaderConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NOISE_BANK_SEED = 20240607
NOISE_BANK_MARGIN_PX = 128
PARAM_KEYS = ("shift", "angle_deg", "scale", "tx_px", "ty_px", "brightness", "contrast", "gamma",
              "noise_std", "noise_y", "noise_x")


def norm_constants(channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per output channel, float32 [channels]."""
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    if channels == 1:
        return mean.mean(keepdims=True), std.mean(keepdims=True)
    return mean, std


def norm_affine(channels: int, grey_max: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """float32 (scale, offset) per channel: (x / grey_max - mean) / std == x * scale + offset. Both
    backends normalise in this form (grey_max 255 folds the uint8 scaling in when nothing else runs)."""
    mean, std = norm_constants(channels)
    return (1 / (std * grey_max)).astype(np.float32), (-mean / std).astype(np.float32)


def max_translate_px(lcfg: LoaderConfig, spec: CropSpec) -> float:
    """Largest translation: translate_frac of out_px, capped by the stored margin on each side."""
    return min(lcfg.translate_frac * spec.out_px, (spec.store_px - spec.out_px) / 2)


def identity_params(n: int) -> dict[str, np.ndarray]:
    z = np.zeros(n, np.float32)
    return {"shift": np.zeros(n, np.int64), "angle_deg": z.copy(), "scale": z + 1, "tx_px": z.copy(),
            "ty_px": z.copy(), "brightness": z.copy(), "contrast": z + 1, "gamma": z + 1,
            "noise_std": z.copy(), "noise_y": np.zeros(n, np.int64), "noise_x": np.zeros(n, np.int64)}


def draw_params(rng: np.random.Generator, lcfg: LoaderConfig, spec: CropSpec, n: int) -> dict[str, np.ndarray]:
    """n independent per-sample draws (arrays of length n); identity params when augment is off."""
    if not lcfg.augment:
        return identity_params(n)
    if lcfg.max_slice_shift > spec.slice_margin:
        raise ValueError(f"max_slice_shift {lcfg.max_slice_shift} exceeds the stored slice_margin {spec.slice_margin}")

    def sym(half):
        return rng.uniform(-half, half, n).astype(np.float32)

    t = max_translate_px(lcfg, spec)
    return {
        "shift": draw_shifts(rng, lcfg, n),
        "angle_deg": sym(lcfg.rotate_deg),
        "scale": 1 + sym(lcfg.scale_range),
        "tx_px": sym(t), "ty_px": sym(t),
        "brightness": sym(lcfg.brightness),
        "contrast": 1 + sym(lcfg.contrast),
        "gamma": 1 + sym(lcfg.gamma),
        "noise_std": rng.uniform(0, lcfg.noise_std, n).astype(np.float32),
        "noise_y": rng.integers(0, NOISE_BANK_MARGIN_PX + 1, n).astype(np.int64),
        "noise_x": rng.integers(0, NOISE_BANK_MARGIN_PX + 1, n).astype(np.int64),
    }


def shift_distribution(lcfg: LoaderConfig) -> np.ndarray:
    """P(shift = s) for s = -K..K (K = max_slice_shift): ``slice_shift_probs`` weights |shift|, each sign
    getting half of a nonzero one; uniform when no weights are given."""
    k = lcfg.max_slice_shift
    if not lcfg.slice_shift_probs:
        return np.full(2 * k + 1, 1.0 / (2 * k + 1))
    w = np.zeros(k + 1)
    given = np.asarray(lcfg.slice_shift_probs[:k + 1], np.float64)
    w[:len(given)] = given
    p = np.concatenate([w[:0:-1] / 2, w[:1], w[1:] / 2])
    return p / p.sum()


def draw_shifts(rng: np.random.Generator, lcfg: LoaderConfig, n: int) -> np.ndarray:
    """n slice-window shifts drawn from :func:`shift_distribution` (uniform: the generator's integers,
    the stream runs before these weights existed drew)."""
    k = lcfg.max_slice_shift
    if not lcfg.slice_shift_probs:
        return rng.integers(-k, k + 1, n).astype(np.int64)
    return rng.choice(np.arange(-k, k + 1), size=n, p=shift_distribution(lcfg)).astype(np.int64)


def take(params: dict, idx) -> dict[str, np.ndarray]:
    """The params of the samples at positions ``idx``."""
    return {k: v[idx] for k, v in params.items()}


def window_starts(params: dict, spec: CropSpec) -> np.ndarray:
    """First stored slice of each sample's window."""
    return spec.slice_margin + params["shift"]


def affine_matrices(params: dict, spec: CropSpec) -> np.ndarray:
    """float32 [n, 2, 3]: destination (out_px grid) -> source (store_px grid) pixel-centre coordinates."""
    a = np.deg2rad(params["angle_deg"].astype(np.float64))
    inv = 1.0 / params["scale"].astype(np.float64)
    c, s = np.cos(a) * inv, np.sin(a) * inv
    co, cs = spec.out_px / 2, spec.store_px / 2
    m = np.empty((len(a), 2, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    m[:, 0, 2] = cs + params["tx_px"] - (c - s) * co
    m[:, 1, 2] = cs + params["ty_px"] - (s + c) * co
    return m.astype(np.float32)


@functools.lru_cache(maxsize=8)
def noise_bank(slices: int, out_px: int) -> np.ndarray:
    """float32 [slices, out_px + margin, out_px + margin] standard-normal field (read-only, seeded)."""
    side = out_px + NOISE_BANK_MARGIN_PX
    bank = np.random.default_rng(NOISE_BANK_SEED).standard_normal((slices, side, side), dtype=np.float32)
    bank.setflags(write=False)
    return bank


def check_geometry(spec: CropSpec) -> None:
    """The store's P - out_px margin must be even so the identity warp is the exact centre crop."""
    if (spec.store_px - spec.out_px) % 2 or spec.store_px < spec.out_px:
        raise ValueError(f"store_px {spec.store_px} vs out_px {spec.out_px}: need an even, non-negative margin")


def eval_transform(stacks: np.ndarray, spec: CropSpec, channels: int):
    """The evaluation (and inference) transform: float32 torch [b, S, C, out_px, out_px] from uint8 slice
    windows [b, S, store_px, store_px]: the exact centre crop, then the normalisation above.

    Validation batches and ``lsdc predict`` both go through here, so a model sees the same pixels in both.
    """
    import torch
    O = spec.out_px
    m = (spec.store_px - O) // 2
    y = torch.from_numpy(stacks)[:, :, m:m + O, m:m + O].float()  # grey 0..255; the scale below divides by 255
    return normalise(y, channels, grey_max=255.0)


def normalise(y, channels: int, grey_max: float):
    """(b, S, O, O) torch grey in [0, grey_max] -> (b, S, C, O, O) normalised channels."""
    import torch
    scale, offset = (torch.from_numpy(v).view(1, 1, -1, 1, 1) for v in norm_affine(channels, grey_max))
    return y.unsqueeze(2) * scale + offset
