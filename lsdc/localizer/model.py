"""The level localiser network, its heatmap loss and its decoder.

``LocNet`` is a small 2D U-Net over a whole sagittal volume with its slices as input channels (one
pass per series instead of one per slice: ~16x cheaper on a CPU, and the first layer still sees every
slice). Its head gives, at every output cell (stride 2 or 4 in volume pixels), one logit per (keypoint,
volume slice): a (K, S, h, w) logit volume per series. To those "context" logits (which level, which
side) a slice branch adds per-slice logits: a small encoder shared by all slices, mixed along the
slice axis with the context (equivariant along slices: each slice's own evidence sets the sub-slice
position the context's first layer cannot keep for every slice). Each keypoint is one softmax jointly over
(slice, row, col), trained with cross-entropy against a separable Gaussian target (sigma in mm, so
the same anatomy tolerance on every axis), decoded by the argmax refined per axis by a parabola
through the log-probabilities (sub-cell precision).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _cbr(cin: int, cout: int, stride: int = 1, dil: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dil, dilation=dil, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _cbr1(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _neighbours(t: torch.Tensor) -> torch.Tensor:
    """(B, S, C, h, w) -> (B, S, 3C, h, w): each slice with its two neighbours (zeros past the ends)."""
    pad = torch.zeros_like(t[:, :1])
    return torch.cat([torch.cat([pad, t[:, :-1]], 1), t, torch.cat([t[:, 1:], pad], 1)], 2)


class LocNet(nn.Module):
    """(B, S, H, W) grey volume -> (B, K, S, H/stride, W/stride) keypoint logits."""

    def __init__(self, in_slices: int, n_keypoints: int, width: int = 24, stride: int = 2):
        super().__init__()
        w = width
        self.S, self.K, self.stride = in_slices, n_keypoints, stride
        self.e0 = _cbr(in_slices, w, 2)  # /2
        self.e1 = nn.Sequential(_cbr(w, 2 * w, 2), _cbr(2 * w, 2 * w))  # /4
        self.e2 = nn.Sequential(_cbr(2 * w, 4 * w, 2), _cbr(4 * w, 4 * w))  # /8
        self.e3 = nn.Sequential(_cbr(4 * w, 4 * w, 2), _cbr(4 * w, 4 * w), _cbr(4 * w, 4 * w, dil=2))  # /16
        self.e4 = nn.Sequential(_cbr(4 * w, 4 * w, 2), _cbr(4 * w, 4 * w))  # /32: whole-spine context
        self.d3 = _cbr(8 * w, 4 * w)
        self.d2 = _cbr(8 * w, 4 * w)
        self.d1 = _cbr(6 * w, 2 * w)
        self.d0 = _cbr(3 * w, w) if stride == 2 else None
        cy = w if stride == 2 else 2 * w
        self.head = nn.Conv2d(cy, n_keypoints * in_slices, 1)  # context logits: which level, which side
        # the slice branch: one small encoder shared by every slice (slices as batch), mixed along the
        # slice axis with the context -> per-slice logits. Equivariant along slices, it carries what
        # the context's first layer squeezes out: each slice's own local evidence (sub-slice position).
        c = max(8, w // 2)
        self.slice_enc = nn.Sequential(_cbr(1, c, 2), _cbr(c, c, 2 if stride == 4 else 1), _cbr(c, c))
        self.slice_ctx = nn.Conv2d(cy, c, 1)
        self.slice_mix = nn.ModuleList([_cbr1(6 * c, 2 * c), _cbr1(6 * c, 2 * c)])
        self.slice_out = nn.Conv2d(2 * c, n_keypoints, 1)

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # per-volume standardisation: series intensities differ by sequence and scanner
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (std + 1e-3)
        f0 = self.e0(x)
        f1 = self.e1(f0)
        f2 = self.e2(f1)
        f3 = self.e3(f2)
        f4 = self.e4(f3)
        y = self.d3(torch.cat([self._up(f4, f3), f3], 1))
        y = self.d2(torch.cat([self._up(y, f2), f2], 1))
        y = self.d1(torch.cat([self._up(y, f1), f1], 1))
        if self.d0 is not None:
            y = self.d0(torch.cat([self._up(y, f0), f0], 1))
        out = self.head(y)  # (B, K*S, h, w)
        B, _, h, w = out.shape
        g = self.slice_enc(x.reshape(B * self.S, 1, *x.shape[-2:]))  # (B*S, c, h, w)
        ctx = self.slice_ctx(y)[:, None].expand(-1, self.S, -1, -1, -1)  # (B, S, c, h, w)
        g = torch.cat([g.view(B, self.S, -1, h, w), ctx], 2)  # (B, S, 2c, h, w)
        for mix in self.slice_mix:  # a kernel-3 convolution along the slice axis, as 1x1 on neighbours
            g = mix(_neighbours(g).flatten(0, 1)).view(B, self.S, -1, h, w)
        per_slice = self.slice_out(g.flatten(0, 1)).view(B, self.S, self.K, h, w).transpose(1, 2)
        return out.view(B, self.K, self.S, h, w) + per_slice


def grid_coords(vol_kc: torch.Tensor, stride: int) -> torch.Tensor:
    """(..., 3) volume coordinates (k, r, c) -> output-grid coordinates (cell centres at integers)."""
    g = vol_kc.clone()
    g[..., 1:] = (vol_kc[..., 1:] + 0.5) / stride - 0.5
    return g


def volume_coords(grid_kc: np.ndarray, stride: int) -> np.ndarray:
    """Inverse of :func:`grid_coords` (NumPy)."""
    v = np.array(grid_kc, np.float64, copy=True)
    v[..., 1:] = (v[..., 1:] + 0.5) * stride - 0.5
    return v


def heatmap_loss(logits: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each labelled keypoint's joint softmax against its Gaussian target.

    logits (B, K, S, h, w); target (B, K, 3) grid coordinates, NaN where unlabelled; sigma (B, 3) grid
    units per axis. The Gaussian is separable and each factor normalised, so
    CE = logsumexp(logits) - sum_{s,r,c} gs gr gc logits, contracted one axis at a time (the 3D
    target is never built).
    """
    B, K, S, h, w = logits.shape
    mask = ~torch.isnan(target).any(-1)  # (B, K)
    if not mask.any():
        return logits.sum() * 0.0
    lg = logits[mask].float()  # (M, S, h, w)
    t = target[mask]  # (M, 3)
    sg = sigma[:, None, :].expand(B, K, 3)[mask]  # (M, 3)

    def gauss(n, centre, s):
        g = torch.exp(-0.5 * ((torch.arange(n, device=lg.device, dtype=lg.dtype)[None] - centre[:, None]) / s[:, None]) ** 2)
        return g / g.sum(1, keepdim=True).clamp_min(1e-12)  # a target off the grid sums to ~0: clamp

    gs, gr, gc = gauss(S, t[:, 0], sg[:, 0]), gauss(h, t[:, 1], sg[:, 1]), gauss(w, t[:, 2], sg[:, 2])
    lse = torch.logsumexp(lg.flatten(1), dim=1)
    dot = ((lg * gs[:, :, None, None]).sum(1) * gr[:, :, None]).sum(1)  # (M, w)
    return (lse - (dot * gc).sum(1)).mean()


def _parabola(lm: float, l0: float, lp: float) -> float:
    """Vertex offset of the parabola through (-1, lm), (0, l0), (1, lp): exact for a Gaussian's log."""
    den = lm - 2 * l0 + lp
    return float(np.clip(0.5 * (lm - lp) / den, -0.5, 0.5)) if den < -1e-9 else 0.0


@torch.no_grad()
def decode(logits: torch.Tensor, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(volume coordinates (B, K, 3), confidence (B, K)) of every keypoint.

    The argmax cell of the joint softmax, refined per axis by the vertex of the parabola through the
    log-probabilities of the cell and its two neighbours along that axis (sub-cell precision; exact
    when the predicted distribution is Gaussian). Confidence = the probability of the 3x3x3 cells
    around the argmax.
    """
    B, K, S, h, w = logits.shape
    logp = torch.log_softmax(logits.float().flatten(2), dim=-1).view(B, K, S, h, w).cpu().numpy()
    out = np.zeros((B, K, 3))
    conf = np.zeros((B, K))
    for b in range(B):
        for k in range(K):
            lk = logp[b, k]
            peak = np.unravel_index(int(lk.argmax()), lk.shape)
            for axis, n in enumerate((S, h, w)):
                i = peak[axis]
                if 0 < i < n - 1:
                    lo, hi = list(peak), list(peak)
                    lo[axis], hi[axis] = i - 1, i + 1
                    out[b, k, axis] = i + _parabola(lk[tuple(lo)], lk[peak], lk[tuple(hi)])
                else:
                    out[b, k, axis] = i
            win = tuple(slice(max(p - 1, 0), p + 2) for p in peak)
            # a peaked ensemble puts ~all mass in the window; float rounding may sum it past 1
            conf[b, k] = min(1.0, float(np.exp(lk[win]).sum()))
    return volume_coords(out, stride), conf


def create_localizer(in_slices: int, n_keypoints: int, width: int, stride: int) -> LocNet:
    return LocNet(in_slices, n_keypoints, width, stride)
