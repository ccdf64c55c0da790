"""The seed-style loader, kept only as the benchmarks' reference point: DICOM files read per sample.

For every sample on every epoch it reads the ``slices`` DICOM files around the labelled instance of the
sample's series with pydicom (neighbours taken in instance-number order, as the seed did), applies
the rescale, min-max normalises each slice, crops a square of crop_mm in pixels (column spacing)
around (x, y) and resizes it to out_px. What it keeps from the seed is the cost model (nothing cached:
a directory listing and one pydicom decode per slice, per sample, per epoch); it drops CLAHE (OpenCV is
not a dependency) and augmentation, which only makes it faster, so speed-ups measured against it are
conservative. It is not a training backend: ``lsdc bench loader --data`` builds it with
:func:`create_dicom_loader`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..core.config import Config
from ..core.errors import InputError
from ..loaders.augment import norm_constants
from ..loaders.base import Loader
from ..loaders.batching import META_KEYS, EpochPlan
from ..loaders.factory import epoch_plan
from ..store.reader import read_index

IMAGES_DIRS = ("train_images", "test_images")


class _DicomDataset(Dataset):
    def __init__(self, index, data_dir, plan: EpochPlan, channels: int):
        self.cols = {c: index[c].to_numpy() for c in ("study_id", "series_id", "instance_number", "x_px", "y_px",
                                                        "spacing_col_mm")}
        self.meta = plan.meta
        self.root = Path(data_dir)
        self.spec, self.channels = plan.spec, channels

    def _files(self, study: int, series: int) -> list[Path]:
        """The series' files in instance-number order, listed afresh for every sample (the seed cached nothing)."""
        for d in IMAGES_DIRS:
            folder = self.root / d / str(study) / str(series)
            if folder.is_dir():
                return sorted(folder.glob("*.dcm"), key=lambda p: int(p.stem))
        raise InputError(f"{self.root}: no DICOM folder for study {study} series {series}")

    def __len__(self) -> int:
        return len(self.cols["study_id"])

    def __getitem__(self, row: int) -> dict:
        c = {k: v[row] for k, v in self.cols.items()}
        files = self._files(int(c["study_id"]), int(c["series_id"]))
        centre = [int(p.stem) for p in files].index(int(c["instance_number"]))
        half = self.spec.slices // 2
        picks = np.clip(np.arange(centre - half, centre + half + 1), 0, len(files) - 1)
        side_px = max(2, int(round(self.spec.crop_mm / float(c["spacing_col_mm"]))))
        crops = [self._crop(files[i], float(c["x_px"]), float(c["y_px"]), side_px) for i in picks]
        x = F.interpolate(torch.stack(crops)[:, None], size=(self.spec.out_px,) * 2, mode="bilinear",
                          align_corners=False)[:, 0]  # (S, O, O) in [0, 1]
        mean, std = (torch.from_numpy(v).view(1, -1, 1, 1) for v in norm_constants(self.channels))
        out = {"image": (x[:, None] - mean) / std, "row": torch.tensor(row)}
        out.update({k: torch.tensor(self.meta[k][row]) for k in META_KEYS})
        return out

    @staticmethod
    def _crop(path: Path, x: float, y: float, side_px: int) -> torch.Tensor:
        ds = pydicom.dcmread(path)
        img = ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1) or 1) \
            + float(getattr(ds, "RescaleIntercept", 0) or 0)
        lo, hi = float(img.min()), float(img.max())
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        r0, c0 = int(round(y)) - side_px // 2, int(round(x)) - side_px // 2
        out = np.zeros((side_px, side_px), np.float32)  # outside the image stays black, as in the seed
        rs, cs = max(r0, 0), max(c0, 0)
        re, ce = min(r0 + side_px, img.shape[0]), min(c0 + side_px, img.shape[1])
        if re > rs and ce > cs:
            out[rs - r0:re - r0, cs - c0:ce - c0] = img[rs:re, cs:ce]
        return torch.from_numpy(out)


class DicomLoader(Loader):
    """Iterable of batch dicts like the store backends; ``len`` = steps per epoch."""

    backend = "dicom"

    def __init__(self, plan: EpochPlan, index, data_dir, channels: int, workers: int, mp_context: str | None = None):
        self.plan, self.workers, self.mp_context, self.epoch = plan, workers, mp_context, 0
        self.dataset = _DicomDataset(index, data_dir, plan, channels)

    def __iter__(self):
        order = self.plan.rank_order(self.epoch).tolist()
        workers = min(self.workers, len(self.plan))
        yield from DataLoader(self.dataset, batch_size=self.plan.batch_size, sampler=order, num_workers=workers,
                              multiprocessing_context=self.mp_context if workers else None)


def create_dicom_loader(cfg: Config, store, view: str, data_dir, rows=None, rank: int = 0, world: int = 1,
                        mp_context: str | None = None) -> DicomLoader:
    """The seed-style loader over the same epoch plan (a training epoch) a store backend would read."""
    plan = epoch_plan(cfg, store, view, rows, train=True, rank=rank, world=world)
    return DicomLoader(plan, read_index(store, view), data_dir, cfg.loader.channels, cfg.loader.workers, mp_context)
