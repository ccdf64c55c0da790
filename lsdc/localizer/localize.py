"""Run a trained localiser: volumes -> keypoints in volume, image and patient coordinates.

The localiser directory holds ``localizer.pt`` (the weights of each ensemble member + meta,
``torch.load(weights_only=True)``) and ``localizer.json`` (held-out metrics). Meta: ``in_slices``,
``volume_px``, ``width``, ``stride``, ``keypoints`` ([condition, level] pairs), ``preprocess`` (the
store's PreprocessConfig as a dict: the volumes at inference must be made the same way), ``offsets``
(see project.py), ``cross_view``, ``slice_bias`` (mean decoded-minus-labelled slice per keypoint on
the training series, subtracted when decoding: the decoder's systematic part, ~0.1 slice on
synthetic data).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core.errors import InputError
from ..train.checkpoint import load_checkpoint, save_checkpoint
from .data import KEYPOINTS, MIRROR, VIEW_KEYPOINTS, VolumeGeom, load_volumes
from .model import create_localizer, decode

MODEL_FILE = "localizer.pt"
METRICS_FILE = "localizer.json"
LOCALIZER_VERSION = 1
#: in-plane test-time shifts (output cells) added to the image and its mirror: +-1 cell along rows and columns
TTA_SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))
#: one predicted keypoint per row (image coordinates of its series, plus patient mm)
POINT_COLUMNS = ("study_id", "series_id", "view", "condition", "level", "slice_frac", "slice_index",
                 "instance_number", "x", "y", "x_mm", "y_mm", "z_mm", "confidence")


class Localizer:
    """A loaded localiser: ``run`` maps canonical uint8 volumes to keypoints."""

    def __init__(self, models, meta: dict, device: str = "cpu", mirror_tta: bool = True):
        models = list(models) if isinstance(models, (list, tuple)) else [models]
        self.models = [m.to(device).to(memory_format=torch.channels_last).eval() for m in models]
        self.meta, self.device, self.mirror_tta = meta, torch.device(device), mirror_tta
        self.shifts: list = list(TTA_SHIFTS)  # in-plane TTA shifts, in output cells
        if [tuple(k) for k in meta["keypoints"]] != list(KEYPOINTS):
            raise InputError("localiser keypoints differ from this lsdc's; train it again")

    @property
    def stride(self) -> int:
        return int(self.meta["stride"])

    @torch.no_grad()
    def run(self, volumes: np.ndarray, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """(volume coordinates (N, K, 3), confidence (N, K)) of canonical uint8 volumes (N, S, H, W)."""
        coords, conf = [], []
        for i in range(0, len(volumes), batch):
            x = torch.from_numpy(volumes[i:i + batch]).to(self.device).float().div_(255)
            x = x.contiguous(memory_format=torch.channels_last)
            c, p = decode(self._tta_logits(x), self.stride)
            coords.append(c)
            conf.append(p)
        if not coords:
            return np.zeros((0, len(KEYPOINTS), 3)), np.zeros((0, len(KEYPOINTS)))
        return np.concatenate(coords), np.concatenate(conf)

    def _tta_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Summed log-probabilities over the ensemble's models and the TTA views: the image, its
        left-right mirror (slices reversed, sides swapped back) and in-plane shifts of one output
        cell, each mapped back."""
        views = [(False, 0, 0)]
        if self.mirror_tta:
            views.append((True, 0, 0))
        for dr, dc in self.shifts:
            views += [(m, dr, dc) for m, *_ in list(views[:2])]
        total = None
        st = self.stride
        for mirror, dr, dc in views:
            xi = x.flip(1) if mirror else x
            if dr or dc:
                xi = torch.roll(xi, (dr * st, dc * st), dims=(2, 3))
            xi = xi.contiguous(memory_format=torch.channels_last)
            for model in self.models:
                out = model(xi)
                if dr or dc:
                    out = torch.roll(out, (-dr, -dc), dims=(3, 4))
                if mirror:
                    out = out[:, list(MIRROR)].flip(2)
                lp = torch.log_softmax(out.flatten(2), -1).view(out.shape)
                total = lp if total is None else total + lp
        return total


def save_localizer(out_dir, models: list, meta: dict, cfg_dict: dict) -> Path:
    path = Path(out_dir) / MODEL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, {"models": [m.state_dict() for m in models],
                                  "meta": {**meta, "lsdc_localizer_version": LOCALIZER_VERSION}, "config": cfg_dict})


def load_localizer(loc_dir, device: str = "cpu") -> Localizer:
    path = Path(loc_dir) / MODEL_FILE
    if not path.is_file():
        raise InputError(f"{path}: no localiser here; run `lsdc train-localizer STORE --out {loc_dir}` first")
    obj = load_checkpoint(path, "cpu", version_key="lsdc_localizer_version", version=LOCALIZER_VERSION,
                          what="localiser")
    meta = obj["meta"]
    models = []
    for sd in obj["models"]:
        models.append(create_localizer(meta["in_slices"], len(meta["keypoints"]), meta["width"], meta["stride"]))
        models[-1].load_state_dict(sd)
    return Localizer(models, meta, device)


def keypoint_rows(geom: VolumeGeom, coords: np.ndarray, conf: np.ndarray, slice_bias=None) -> list[dict]:
    """Every keypoint decoded on one series as POINT_COLUMNS dicts (nearest real slice, its
    instance); ``own`` marks the series' own view's keypoints (the others feed :func:`fuse`).
    ``slice_bias`` (real slices per keypoint, measured on the training series) is subtracted."""
    out = []
    for k, (condition, level) in enumerate(KEYPOINTS):
        idx, x, y = geom.to_image(coords[k])
        idx -= slice_bias[k] if slice_bias is not None else 0.0
        x = float(np.clip(x, 0, geom.cols - 1))
        y = float(np.clip(y, 0, geom.rows - 1))
        j = geom.nearest_slice(idx)
        p = geom.to_patient(float(np.clip(idx, -0.5, geom.n_slices - 0.5)), x, y)
        out.append({"study_id": geom.study_id, "series_id": geom.series_id, "view": geom.view,
                    "condition": condition, "level": level, "slice_frac": float(idx), "slice_index": j,
                    "instance_number": int(geom.instance_numbers[j]), "x": x, "y": y,
                    "x_mm": float(p[0]), "y_mm": float(p[1]), "z_mm": float(p[2]), "confidence": float(conf[k]),
                    "own": k in VIEW_KEYPOINTS[geom.view]})
    return out


def localize_items(loc: Localizer, geoms: list, volumes: np.ndarray, fused: bool | None = None) -> pd.DataFrame:
    """Own-view keypoints of every series; ``fused`` (default: as the localiser was trained): each
    one the mean (patient mm) of its estimates from all the series given of its study (own series +
    the other sagittal view's), mapped back."""
    fused = bool(loc.meta.get("cross_view", False)) if fused is None else fused
    coords, conf = loc.run(volumes)
    bias = loc.meta.get("slice_bias")
    rows = pd.DataFrame([r for i, g in enumerate(geoms) for r in keypoint_rows(g, coords[i], conf[i], bias)],
                        columns=list(POINT_COLUMNS) + ["own"])
    out = fuse(rows, {g.series_id: g for g in geoms}) if fused else rows[rows["own"]]
    return out.drop(columns="own").reset_index(drop=True)


def fuse(rows: pd.DataFrame, geoms: dict) -> pd.DataFrame:
    """Own-view rows re-placed at the mean patient point of every estimate of that keypoint in the
    study (one per series), as their series' nearest slice, x and y."""
    out = []
    for (study_id, condition, level), g in rows.groupby(["study_id", "condition", "level"], sort=False):
        mean = g[["x_mm", "y_mm", "z_mm"]].to_numpy().mean(axis=0)
        for r in g[g["own"]].to_dict("records"):
            geom = geoms[r["series_id"]]
            idx, x, y = geom.from_patient(mean)
            x, y = float(np.clip(x, 0, geom.cols - 1)), float(np.clip(y, 0, geom.rows - 1))
            j = geom.nearest_slice(idx)
            out.append({**r, "slice_frac": float(idx), "slice_index": j, "instance_number": int(geom.instance_numbers[j]),
                        "x": x, "y": y, "x_mm": mean[0], "y_mm": mean[1], "z_mm": mean[2]})
    return pd.DataFrame(out, columns=list(rows.columns))


def localize_store(loc: Localizer, store) -> pd.DataFrame:
    """Keypoints of every sagittal volume of a store (any split), one POINT_COLUMNS row each."""
    geoms, volumes = load_volumes(store)
    if geoms and (volumes.shape[1] != loc.meta["in_slices"] or volumes.shape[2] != loc.meta["volume_px"]):
        raise InputError(f"{store}: volumes of {volumes.shape[1]} slices x {volumes.shape[2]} px, the localiser "
                         f"was trained on {loc.meta['in_slices']} x {loc.meta['volume_px']}")
    return localize_items(loc, geoms, volumes)
