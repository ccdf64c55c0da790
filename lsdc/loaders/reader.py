"""Fast reads of the crop store: chunk files decoded straight into reused buffers, quasi-random order.

zarr-python pays ~1 ms of machinery per call, several times the Blosc decode of a 32-sample chunk, so
the hot path reads each chunk FILE itself (Zarr v3 default key ``crops/c/<i>/0/0/0``) and decodes it
with Blosc into a preallocated array, straight from a read-only mapping of the file that is kept for
later epochs (copying the file into a buffer first, or mapping it anew each time, cost 2x and 1.3x
the LZ4 decode itself); the store must not be rewritten while a reader has it open. That path is only
taken after ``crops/zarr.json`` has been checked to describe exactly that layout (uint8, regular grid,
chunking on the sample axis only, codecs bytes + blosc, no sharding or storage transformers); anything
else falls back to zarr-python, with the same results.

An epoch (``epoch_order``) visits whole chunks in a seeded random order; ``SampleStream`` then mixes
samples within windows of consecutive chunks (ffcv's "quasi-random" order): one decode per chunk per
epoch, bounded memory, and no sample lost or repeated. ``shard`` and ``split_batches`` cut an epoch
into disjoint, near-equal shares for DDP ranks and loader workers. Everything here is a pure function
of (seed, epoch, rank, world, part), and a reader opens nothing until first used, so it pickles into
fork and spawn workers alike.
"""
from __future__ import annotations

import json
import math
import mmap
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import InputError
from ..core.schema import CENTER, LEFT, RIGHT, SIDES
from ..preprocess.store import crops_array, read_index

_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux: map the whole chunk file in one call
MAX_MAPS = 4096  # chunk files kept mapped per reader (vm.max_map_count is ~65k)

#: streams drawn from one (seed, epoch): the order is shared by all ranks, the rest is per (rank, part)
ORDER_STREAM, BUFFER_STREAM, PARAM_STREAM = 0, 1, 2


def epoch_rng(seed: int, epoch: int, stream: int, *extra: int) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, stream, *extra), never on global state."""
    return np.random.default_rng([int(seed), int(epoch), int(stream), *map(int, extra)])


class StoreReader:
    """Chunk-wise and random access to ``<store>/<view>/crops``: uint8 [N, S_store, P, P]."""

    def __init__(self, store, view: str):
        self.store, self.view = Path(store), view
        meta_path = self.store / view / "crops" / "zarr.json"
        if not meta_path.is_file():
            raise InputError(f"{meta_path}: missing; the store has no {view} crops (run `lsdc preprocess`)")
        meta = json.loads(meta_path.read_text())
        self.shape = tuple(meta["shape"])
        self.chunk_shape = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.chunk = self.chunk_shape[0]
        self.n_chunks = math.ceil(self.shape[0] / self.chunk) if self.shape[0] else 0
        self.fill_value = int(meta.get("fill_value") or 0)
        self.direct = _direct_layout_ok(meta)
        self._zarr = None
        self._spare: dict = {}
        self._maps: dict = {}

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self):  # workers reopen lazily; never ship handles or buffers
        return {**self.__dict__, "_zarr": None, "_spare": {}, "_maps": {}}

    def take_buffer(self, shape: tuple) -> np.ndarray:
        """A uint8 work array of ``shape``, reused across epochs (fresh pages cost ~1 ms per 4 MB).
        Hand it back with :meth:`give_buffer`; a buffer still out is never handed to anyone else."""
        spare = self._spare.pop(tuple(shape), None)
        return np.empty(shape, np.uint8) if spare is None else spare

    def give_buffer(self, buf: np.ndarray) -> None:
        self._spare[buf.shape] = buf

    @property
    def sample_shape(self) -> tuple:
        return self.shape[1:]

    def chunk_path(self, ci: int) -> Path:
        return self.store / self.view / "crops" / "c" / str(ci) / "/".join("0" * (len(self.shape) - 1))

    def read_chunk(self, ci: int, out: np.ndarray | None = None) -> np.ndarray:
        """Chunk ``ci`` as uint8 [chunk, S, P, P] (rows past the array end are padding)."""
        out = np.empty(self.chunk_shape, np.uint8) if out is None else out
        if not self.direct:
            lo, hi = ci * self.chunk, min((ci + 1) * self.chunk, self.shape[0])
            if self._zarr is None:
                self._zarr = crops_array(self.store, self.view)
            out[:hi - lo] = self._zarr[lo:hi]
            return out
        from numcodecs.blosc import decompress
        mm = self._maps.get(ci)
        if mm is None:
            try:
                fd = os.open(self.chunk_path(ci), os.O_RDONLY)
            except FileNotFoundError:  # zarr does not write chunks that hold only the fill value
                out.fill(self.fill_value)
                return out
            try:
                mm = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
            if len(self._maps) >= MAX_MAPS:
                self.close()
            self._maps[ci] = mm
        decompress(mm, out)
        return out

    def close(self) -> None:
        """Unmap the chunk files (they are mapped once and decoded straight from the page cache)."""
        for mm in self._maps.values():
            mm.close()
        self._maps = {}

    def read(self, rows) -> np.ndarray:
        """uint8 [len(rows), S, P, P] for any row ids (each needed chunk decoded once)."""
        rows = np.asarray(rows, np.int64)
        out = np.empty((len(rows),) + self.sample_shape, np.uint8)
        buf = np.empty(self.chunk_shape, np.uint8)
        for ci, pos in _group_by_chunk(rows, self.chunk):
            self.read_chunk(ci, buf)
            out[pos] = buf[rows[pos] - ci * self.chunk]
        return out


def _direct_layout_ok(meta: dict) -> bool:
    """True when zarr.json describes the plain layout the fast path decodes itself."""
    try:
        codecs = [c["name"] for c in meta["codecs"]]
        shape, chunks = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
        key = meta["chunk_key_encoding"]
        return (meta.get("zarr_format") == 3 and meta["data_type"] == "uint8"
                and meta["chunk_grid"]["name"] == "regular" and codecs == ["bytes", "blosc"]
                and key["name"] == "default" and key.get("configuration", {}).get("separator", "/") == "/"
                and not meta.get("storage_transformers") and list(chunks[1:]) == list(shape[1:]))
    except (KeyError, TypeError):
        return False


def _group_by_chunk(rows: np.ndarray, chunk: int):
    """(chunk id, positions in ``rows``) for every chunk that ``rows`` touches, in first-seen order."""
    cids = rows // chunk
    _, first, inverse = np.unique(cids, return_index=True, return_inverse=True)
    for k in np.argsort(first):
        yield int(cids[first[k]]), np.flatnonzero(inverse == k)


# -- per-row metadata the batches carry -------------------------------------------------------------
def sample_meta(index: pd.DataFrame) -> dict[str, np.ndarray]:
    """int64 arrays by row: label (-1 blank), level 0..4, side (0 left / 1 right; 0 on centre views), study_id."""
    side_name = index["side"] if "side" in index else pd.Series([SIDES[i] for i in index["side_idx"]])
    side = side_name.map({CENTER: 0, LEFT: 0, RIGHT: 1}).to_numpy(np.int64)
    return {"label": index["label"].to_numpy(np.int64), "level": index["level_idx"].to_numpy(np.int64),
            "side": side, "study_id": index["study_id"].to_numpy(np.int64)}


def open_view(store, view: str) -> tuple[StoreReader, dict[str, np.ndarray]]:
    """A reader and the per-row metadata of one view; checks they describe the same rows."""
    reader = StoreReader(store, view)
    meta = sample_meta(read_index(store, view))
    if len(meta["label"]) != len(reader):
        raise InputError(f"{store}/{view}: index has {len(meta['label'])} rows, crops {len(reader)}; convert again")
    return reader, meta


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
