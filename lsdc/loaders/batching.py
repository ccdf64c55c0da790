"""An epoch as uint8 batches plus their augmentation params: what every store-backed backend consumes.

``EpochPlan`` is a picklable description (store reader, rows, seed, rank/world, batch size); for an
epoch it yields the :class:`RawBatch` objects of one part (a DataLoader worker, or the DALI feeder thread). The
order, the parts and the params are pure functions of (seed, epoch, rank, world, part, parts).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..core.config import CropSpec, LoaderConfig
from ..store.chunks import StoreReader
from .augment import check_geometry, draw_params, take, window_starts
from .sampling import BUFFER_STREAM, PARAM_STREAM, SampleStream, epoch_order, epoch_rng, shard, split_batches

META_KEYS = ("label", "level", "side", "study_id")


@dataclass
class RawBatch:
    """b samples before augmentation; every array has b rows."""

    stacks: np.ndarray
    """uint8 [b, slices, P, P]: each sample's slice window (shift already applied), stored size. May be
    reused by a later batch when the producer was asked for a ring of buffers."""
    params: dict
    """Per-sample augmentation params (augment.PARAM_KEYS), identity when augmentation is off."""
    row: np.ndarray
    """int64 [b] index row ids (repeated only by balanced draws and by a rank's padding, see reader.shard)."""
    meta: dict
    """int64 [b] arrays: label, level, side, study_id."""


@dataclass
class EpochPlan:
    """What one rank reads: rows of a view, its share of each epoch, the params; split into parts on demand."""

    reader: StoreReader
    meta: dict
    rows: np.ndarray
    spec: CropSpec
    lcfg: LoaderConfig
    """Loader settings; ``lcfg.augment`` is already the effective flag (train and augment)."""
    batch_size: int
    seed: int
    shuffle: bool
    balanced: bool = False
    rank: int = 0
    world: int = 1

    def __post_init__(self):
        self.rows = np.asarray(self.rows, np.int64)
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= len(self.reader)):
            raise ValueError(f"row ids must lie in [0, {len(self.reader)})")
        if self.reader.sample_shape[0] != self.spec.store_slices or self.reader.sample_shape[1] != self.spec.store_px:
            raise ValueError(f"stored samples {self.reader.sample_shape} do not match the crop spec "
                             f"({self.spec.store_slices} slices of {self.spec.store_px} px)")
        check_geometry(self.spec)

    @classmethod
    def create(cls, reader, meta, rows, spec, lcfg: LoaderConfig, batch_size, seed, train: bool, rank=0, world=1):
        lcfg = dataclasses.replace(lcfg, augment=bool(train and lcfg.augment))
        rows = np.arange(len(reader)) if rows is None else rows
        return cls(reader, meta, rows, spec, lcfg, batch_size, seed, shuffle=train,
                   balanced=bool(train and lcfg.balanced), rank=rank, world=world)

    @property
    def num_samples(self) -> int:
        """Samples this rank yields per epoch (padded to the same count on every rank)."""
        n = len(self.rows)
        return n if self.world == 1 else math.ceil(n / self.world)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def rank_order(self, epoch: int) -> np.ndarray:
        labels = self.meta["label"] if self.balanced else None
        order = epoch_order(self.rows, self.reader.chunk, self.seed, epoch, self.shuffle, labels)
        return shard(order, self.rank, self.world)

    def part_order(self, epoch: int, part: int = 0, parts: int = 1) -> np.ndarray:
        return split_batches(self.rank_order(epoch), parts, self.batch_size)[part]

    def batches(self, epoch: int, part: int = 0, parts: int = 1, ring: int = 0):
        """The raw batches of this rank's ``part`` of ``parts`` (whole batches; only the last may be short).

        ring 0: every ``stacks`` array is new; ring k: k arrays are reused in turn (SampleStream.batches)."""
        order = self.part_order(epoch, part, parts)
        prng = epoch_rng(self.seed, epoch, PARAM_STREAM, self.rank, part)
        params = draw_params(prng, self.lcfg, self.spec, len(order))
        buffer = self.lcfg.shuffle_buffer if self.shuffle else 1
        stream = SampleStream(self.reader, order, buffer, epoch_rng(self.seed, epoch, BUFFER_STREAM, self.rank, part),
                              starts=window_starts(params, self.spec), slices=self.spec.slices)
        for stacks, pos in stream.batches(self.batch_size, ring):
            rows = order[pos]
            yield RawBatch(stacks, take(params, pos), rows, {k: self.meta[k][rows] for k in META_KEYS})
