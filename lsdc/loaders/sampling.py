"""Epoch order, DDP shards, worker parts and the shuffled sample stream over a store view.

An epoch (``epoch_order``) visits whole chunks in a seeded random order; ``SampleStream`` then mixes
samples within windows of consecutive chunks (ffcv's "quasi-random" order): one decode per chunk per
epoch, bounded memory, and no sample lost or repeated. ``shard`` and ``split_batches`` cut an epoch
into disjoint, near-equal shares for DDP ranks and loader workers. Everything here is a pure function
of (seed, epoch, rank, world, part).
"""
from __future__ import annotations

import math

import numpy as np

from ..core.errors import InputError
from ..store.chunks import StoreReader

#: streams drawn from one (seed, epoch): the order is shared by all ranks, the rest is per (rank, part)
ORDER_STREAM, BUFFER_STREAM, PARAM_STREAM = 0, 1, 2


def epoch_rng(seed: int, epoch: int, stream: int, *extra: int) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, stream, *extra), never on global state."""
    return np.random.default_rng([int(seed), int(epoch), int(stream), *map(int, extra)])


# -- epochs, shards and parts -----------------------------------------------------------------------
def balanced_draw(rows: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """len(rows) rows drawn with replacement, each class equally likely (the seed's oversampling).

    Blank-labelled rows (label < 0) carry no class and are never drawn.
    """
    lab = labels[rows]
    classes, counts = np.unique(lab[lab >= 0], return_counts=True)
    if not len(classes):
        raise InputError("balanced sampling needs labelled rows; every requested row is blank")
    weight = np.zeros(len(rows))
    for c, n in zip(classes, counts):
        weight[lab == c] = 1.0 / (n * len(classes))
    return np.sort(rows[rng.choice(len(rows), size=len(rows), p=weight / weight.sum())])


def epoch_order(rows, chunk: int, seed: int, epoch: int, shuffle: bool, labels=None) -> np.ndarray:
    """Row ids of one epoch in read order, identical on every rank.

    shuffle: whole chunks in a random order (rows inside a chunk ascending), the same rows else.
    labels: class-balanced draw with replacement (epoch size = len(rows)) instead of each row once.
    """
    rows = np.asarray(rows, np.int64)
    rng = epoch_rng(seed, epoch, ORDER_STREAM)
    if labels is not None:
        rows = balanced_draw(rows, np.asarray(labels), rng)
    if not shuffle:
        return rows
    rows = np.sort(rows)
    cids = rows // chunk
    starts = np.flatnonzero(np.r_[True, cids[1:] != cids[:-1]])
    bounds = np.r_[starts, len(rows)]
    perm = rng.permutation(len(starts))
    return np.concatenate([rows[bounds[k]:bounds[k + 1]] for k in perm]) if len(rows) else rows


def shard(order: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank ``rank``'s contiguous share of ``order``: sizes differ by at most one row, and shorter shares
    are padded by repeating their first rows so every rank runs the same number of steps.

    Padding repeats a real row id, so an evaluation that keys predictions by row never double counts.
    """
    if not 0 <= rank < world:
        raise InputError(f"rank {rank} outside world size {world}")
    n = len(order)
    if world == 1:
        return order
    lo, hi = rank * n // world, (rank + 1) * n // world
    mine, want = order[lo:hi], math.ceil(n / world)
    if len(mine) < want:
        source = mine if len(mine) else order
        mine = np.concatenate([mine, np.resize(source, want - len(mine))])
    return mine


def split_batches(order: np.ndarray, parts: int, batch_size: int) -> list[np.ndarray]:
    """``order`` cut into ``parts`` contiguous pieces of whole batches (only the last may be partial)."""
    nb = math.ceil(len(order) / batch_size)
    edges = [min(len(order), (p * nb // parts) * batch_size) for p in range(parts + 1)]
    return [order[edges[p]:edges[p + 1]] for p in range(parts)]


class SampleStream:
    """``order`` as uint8 batches [b, slices, P, P] plus their positions in ``order``.

    Shuffling (ffcv's "quasi-random" order): ``order`` already visits whole chunks in a random order;
    here consecutive chunk runs are decoded ``buffer_size // chunk`` at a time into one window array and
    the window's samples leave in a uniform random permutation (``buffer_size`` 1 keeps ``order``).
    Memory is one window; each chunk is decoded once and each sample copied once, by one ``np.take`` per
    batch (no Python work per sample). ``starts[k]`` is the first stored slice kept for position k (the
    drawn slice shift), so only the slices that will be used are copied.
    """

    def __init__(self, reader: StoreReader, order, buffer_size: int, rng: np.random.Generator,
                 starts=None, slices: int | None = None):
        self.reader, self.order, self.rng = reader, np.asarray(order, np.int64), rng
        self.shuffle = int(buffer_size) > 1
        self.window = max(1, int(buffer_size) // reader.chunk) if self.shuffle else 1
        self.slices = reader.sample_shape[0] if slices is None else int(slices)
        self.starts = np.zeros(len(self.order), np.int64) if starts is None else np.asarray(starts, np.int64)
        if len(self.starts) != len(self.order):
            raise ValueError("starts must give one first slice per order position")
        if len(self.starts) and (self.starts.min() < 0 or self.starts.max() + self.slices > reader.sample_shape[0]):
            raise ValueError(f"slice window outside the {reader.sample_shape[0]} stored slices")

    def __len__(self) -> int:
        return len(self.order)

    def _runs(self) -> list[tuple[int, int, int]]:
        """(chunk id, first, end position) of each run of consecutive positions in one chunk."""
        cids = self.order // self.reader.chunk
        starts = np.flatnonzero(np.r_[True, cids[1:] != cids[:-1]]) if len(cids) else np.empty(0, np.int64)
        ends = np.r_[starts[1:], len(cids)]
        return [(int(cids[a]), int(a), int(b)) for a, b in zip(starts.tolist(), ends.tolist())]

    def batches(self, batch_size: int, ring: int = 0):
        """Yield (stacks uint8 [b, slices, P, P], positions int64 [b]); every b == batch_size but the last.

        ring 0: each ``stacks`` is a fresh array the consumer may keep. ring k: ``k`` arrays are reused in
        turn, so a ``stacks`` is overwritten k batches later (fresh 2 MB arrays cost ~7 us a sample in
        page faults)."""
        reader, runs = self.reader, self._runs()
        S = reader.sample_shape[0]
        chunk, plane = reader.chunk, reader.sample_shape[1:]
        per = min(self.window, max(1, len(runs)))
        win = reader.take_buffer((per * chunk,) + reader.sample_shape)
        planes = win.reshape((-1,) + plane)  # (window samples * S, P, P): one slice per row
        span = np.arange(self.slices)
        out, pos, fill = None, np.empty(batch_size, np.int64), 0
        left, made = len(self.order), 0
        pool = [np.empty((batch_size, self.slices) + plane, np.uint8) for _ in range(ring)]
        try:
            for w in range(0, len(runs), per):
                src, ks = [], []
                for b, (ci, a, e) in enumerate(runs[w:w + per]):
                    reader.read_chunk(ci, win[b * chunk:(b + 1) * chunk])
                    src.append(b * chunk + self.order[a:e] % chunk)
                    ks.append(np.arange(a, e))
                src, ks = np.concatenate(src), np.concatenate(ks)
                if self.shuffle:
                    perm = self.rng.permutation(len(ks))
                    src, ks = src[perm], ks[perm]
                first = (src * S + self.starts[ks])[:, None] + span  # (n, slices) rows of ``planes``
                t = 0
                while t < len(ks):
                    if out is None:
                        b = min(batch_size, left)
                        out = pool[made % ring][:b] if ring else np.empty((b, self.slices) + plane, np.uint8)
                        made += 1
                    m = min(len(out) - fill, len(ks) - t)
                    np.take(planes, first[t:t + m].ravel(), axis=0, mode="clip",  # "raise" buffers ``out``
                            out=out[fill:fill + m].reshape((-1,) + plane))
                    pos[fill:fill + m] = ks[t:t + m]
                    fill, t = fill + m, t + m
                    if fill == len(out):
                        yield out, pos[:fill].copy()
                        left -= fill
                        out, fill = None, 0
        finally:  # only a finished (or closed) stream returns its window
            reader.give_buffer(win)
