"""The fast reader of a view's crops: chunk files decoded straight into reused buffers.

zarr-python pays ~1 ms of machinery per call, several times the Blosc decode of a 32-sample chunk, so
the hot path reads each chunk FILE itself (Zarr v3 default key ``crops/c/<i>/0/0/0``) and decodes it
with Blosc into a preallocated array, straight from a read-only mapping of the file that is kept for
later epochs (copying the file into a buffer first, or mapping it anew each time, cost 2x and 1.3x
the LZ4 decode itself); the store must not be rewritten while a reader has it open. That path is only
taken after ``crops/zarr.json`` has been checked to describe exactly that layout (uint8, regular grid,
chunking on the sample axis only, codecs bytes + blosc, no sharding or storage transformers); anything
else falls back to zarr-python (:func:`lsdc.store.reader.crops_array`), with the same results.

A reader opens nothing until first used, so it pickles into fork and spawn workers alike.
"""
from __future__ import annotations

import json
import math
import mmap
import os
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from .layout import CROPS

_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux: map the whole chunk file in one call
MAX_MAPS = 4096  # chunk files kept mapped per reader (vm.max_map_count is ~65k)

class StoreReader:
    """Chunk-wise and random access to ``<store>/<view>/crops``: uint8 [N, S_store, P, P]."""

    def __init__(self, store, view: str):
        self.store, self.view = Path(store), view
        meta_path = self.store / view / CROPS / "zarr.json"
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
        return self.store / self.view / CROPS / "c" / str(ci) / "/".join("0" * (len(self.shape) - 1))

    def read_chunk(self, ci: int, out: np.ndarray | None = None) -> np.ndarray:
        """Chunk ``ci`` as uint8 [chunk, S, P, P] (rows past the array end are padding)."""
        out = np.empty(self.chunk_shape, np.uint8) if out is None else out
        if not self.direct:
            lo, hi = ci * self.chunk, min((ci + 1) * self.chunk, self.shape[0])
            if self._zarr is None:
                from .reader import crops_array
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
