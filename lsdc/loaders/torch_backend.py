"""The PyTorch backend: a DataLoader over the same reader and params, the same math as the DALI graph.

Each DataLoader worker reads its own contiguous, batch-aligned part of the rank's epoch
(``EpochPlan.batches(epoch, part=worker id, parts=workers)``) and yields whole augmented batches, so
the batch order is a pure function of (seed, epoch, rank, world, workers). The warp is one
``affine_grid``/``grid_sample`` per sample with the slices as channels: every slice of a sample gets
the same transform by construction.
"""
from __future__ import annotations

import functools
import multiprocessing as mp

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..core.config import CropSpec
from .augment import affine_matrices, eval_transform, noise_bank, normalise
from .base import Loader
from .batching import EpochPlan, RawBatch


@functools.lru_cache(maxsize=4)
def _bank(slices: int, out_px: int) -> torch.Tensor:
    return torch.from_numpy(noise_bank(slices, out_px).copy())


def _theta(params: dict, spec: CropSpec) -> torch.Tensor:
    """affine_grid's theta (normalised output -> normalised input coords, align_corners=False)."""
    m = affine_matrices(params, spec).astype(np.float64)  # pixel-centre coords: u_src = A u_dst + t
    P, O = spec.store_px, spec.out_px
    theta = np.empty_like(m)
    theta[:, :, :2] = m[:, :, :2] * (O / P)
    theta[:, :, 2] = (m[:, :, :2].sum(-1) * O + 2 * m[:, :, 2]) / P - 1
    return torch.from_numpy(theta.astype(np.float32))


def augment_batch(raw: RawBatch, spec: CropSpec, channels: int, augment: bool) -> torch.Tensor:
    """float32 [b, S, C, out_px, out_px] from a raw batch (augment.py documents the math)."""
    if augment:
        x = torch.from_numpy(raw.stacks)  # (b, S, P, P) uint8
        O = spec.out_px
        b, S = x.shape[:2]
        p = raw.params
        grid = F.affine_grid(_theta(p, spec), [b, S, O, O], align_corners=False)
        y = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        c = torch.from_numpy(p["contrast"]).view(b, 1, 1, 1)
        shift = torch.from_numpy(p["brightness"]).view(b, 1, 1, 1)
        y = y.mul_(c / 255).add_(0.5 - 0.5 * c + shift).clamp_(0, 1)
        y = y.pow_(torch.from_numpy(p["gamma"]).view(b, 1, 1, 1))
        bank = _bank(spec.slices, O)
        noise = torch.stack([bank[:, ny:ny + O, nx:nx + O]
                             for ny, nx in zip(p["noise_y"].tolist(), p["noise_x"].tolist())])
        y = y.add_(noise.mul_(torch.from_numpy(p["noise_std"]).view(b, 1, 1, 1)))
        return normalise(y, channels, grey_max=1.0)  # (b, S, C, O, O)
    return eval_transform(raw.stacks, spec, channels)


def to_batch(raw: RawBatch, image: torch.Tensor) -> dict:
    out = {"image": image, "row": torch.from_numpy(raw.row)}
    out.update({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in raw.meta.items()})
    return out


class _EpochDataset(IterableDataset):
    """One epoch per ``iter``; the epoch number is shared memory, so persistent workers follow set_epoch."""

    def __init__(self, plan: EpochPlan, channels: int, epoch):
        self.plan, self.channels, self.epoch = plan, channels, epoch  # epoch: a multiprocessing Value

    def __iter__(self):
        info = get_worker_info()
        part, parts = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:  # one decode thread per worker: no oversubscription, no blosc pool across fork
            import numcodecs.blosc
            numcodecs.blosc.use_threads = False
        for raw in self.plan.batches(self.epoch.value, part, parts, ring=2):  # augment_batch copies at once
            yield to_batch(raw, augment_batch(raw, self.plan.spec, self.channels, self.plan.lcfg.augment))


class TorchLoader(Loader):
    """Iterable of batch dicts; ``len`` = steps per epoch; ``set_epoch`` for a new permutation.

    Workers are started once (persistent) with ``mp_context`` (None: torch's default, fork on Linux)
    and read their part of each epoch; a worker process costs its start-up once, not every epoch.
    """

    backend = "torch"

    def __init__(self, plan: EpochPlan, channels: int, workers: int, mp_context: str | None = None,
                 pin_memory: bool = False):
        self.plan, self.channels, self.pin_memory = plan, channels, pin_memory
        self.workers = min(workers, len(plan))
        self.mp_context = mp.get_context(mp_context) if self.workers else None
        self._epoch = (self.mp_context or mp).Value("q", 0, lock=False)
        self._dl = None

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = int(epoch)

    def __iter__(self):
        if self._dl is None:
            w = self.workers
            self._dl = DataLoader(_EpochDataset(self.plan, self.channels, self._epoch), batch_size=None,
                                  num_workers=w, pin_memory=self.pin_memory, multiprocessing_context=self.mp_context,
                                  prefetch_factor=2 if w else None, persistent_workers=bool(w))
        yield from self._dl

    def close(self) -> None:
        """Stop the persistent workers (they also stop when the loader is garbage collected)."""
        it = getattr(self._dl, "_iterator", None) if self._dl is not None else None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self._dl = None
