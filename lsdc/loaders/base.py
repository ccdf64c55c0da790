"""The one loader contract every backend implements (``create_loader`` returns one of these).

A loader is an iterable of batch dicts

    image     float32 [B, S, C, out_px, out_px]   normalised (lsdc.loaders.augment), C = channels
    label     int64 [B]   0/1/2, -1 where train.csv is blank
    level     int64 [B]   0..4 (L1/L2 .. L5/S1)
    side      int64 [B]   0 left / 1 right on two-sided views, 0 on the centre view
    row       int64 [B]   index row id (a rank's padded share repeats real row ids, never invents one)
    study_id  int64 [B]

with ``len(loader)`` = steps per epoch, ``loader.num_samples`` = samples per epoch on this rank,
``loader.set_epoch(e)`` for the next permutation, ``loader.backend`` naming the backend, and
``close()`` releasing its workers, threads or pipelines (a loader is also a context manager).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator

from .batching import EpochPlan


class Loader(ABC):
    """What every backend shares over an :class:`EpochPlan`: steps and samples per epoch, and the
    epoch number that picks the permutation (a backend may keep the epoch elsewhere, e.g. in shared
    memory for its workers, by overriding ``set_epoch``/``epoch``)."""

    backend: str
    """The backend's name, as in ``loader.backend`` of the config."""
    plan: EpochPlan
    epoch: int = 0

    @abstractmethod
    def __iter__(self) -> Iterator[dict]:
        """One epoch of batch dicts (the epoch set by :meth:`set_epoch`)."""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.plan)

    @property
    def num_samples(self) -> int:
        return self.plan.num_samples

    def close(self) -> None:
        """Release workers, threads and pipelines; the loader is not iterated again afterwards."""

    def __enter__(self) -> "Loader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
