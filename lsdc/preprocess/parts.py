"""One file per converted study: the unit of atomicity, resumption and sharding.

A worker writes ``OUT/_parts/<study_id>.npz`` to a temporary name and renames it into place, so a study
is committed whole or not at all (a ``kill -9`` leaves at most a stray ``.tmp`` file, which is
ignored and removed). Shards on several machines write disjoint part files; assembling the Zarr store
from all parts is a separate, repeatable step. Once the store is committed (complete and on disk) the
parts are deleted (:func:`remove_parts`) unless the user keeps them.
"""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from ..store.layout import PARTS_DIR

# Arrays are stored raw (an uncompressed .npz): a part is written once and read once, at assembly,
# and MR crops compress ~1.1x, so compressing here would only cost time (the store's own codec is
# chosen for read speed in store.py).


def parts_dir(out_dir) -> Path:
    return Path(out_dir) / PARTS_DIR


def part_path(out_dir, study_id: int) -> Path:
    return parts_dir(out_dir) / f"{int(study_id)}.npz"


def save_part(path: Path, fingerprint: str, crops: dict, rows: dict, volumes: dict, volume_rows: dict,
              skips: list, notes: list = (), series: list = ()) -> None:
    """Atomically write one study: crops/volumes are {view: uint8 array}, rows {view: [dict, ...]};
    ``notes`` (dropped or collapsed slices) and ``series`` (stack counts per series read) go to the report."""
    arrays = {}
    meta = {"fingerprint": fingerprint, "rows": rows, "volume_rows": volume_rows, "skips": skips,
            "notes": list(notes), "series": list(series), "shapes": {}}
    for kind, table in (("crops", crops), ("volumes", volumes)):
        for view, arr in table.items():
            key = f"{kind}/{view}"
            arrays[key] = np.ascontiguousarray(arr, dtype=np.uint8)
            meta["shapes"][key] = list(arr.shape)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    # No fsync: rename is atomic against a killed process, and a part that a power loss leaves
    # truncated fails to load, so read_part returns None and the study is simply converted again.
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)  # the commit point


class Part:
    """A committed study, read lazily: metadata at once, pixels on demand."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with np.load(self.path) as z:
            self.meta = json.loads(z["meta"].tobytes())

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    def rows(self, view: str) -> list[dict]:
        return self.meta["rows"].get(view, [])

    def volume_rows(self, view: str) -> list[dict]:
        return self.meta["volume_rows"].get(view, [])

    @property
    def skips(self) -> list[dict]:
        return self.meta["skips"]

    @property
    def notes(self) -> list[dict]:
        return self.meta.get("notes", [])

    @property
    def series(self) -> list[dict]:
        return self.meta.get("series", [])

    def array(self, kind: str, view: str) -> np.ndarray:
        key = f"{kind}/{view}"
        shape = self.meta["shapes"].get(key)
        if shape is None:
            return None
        with np.load(self.path) as z:
            arr = z[key]
        if list(arr.shape) != shape or arr.dtype != np.uint8:
            raise ValueError(f"{self.path}: {key} is {arr.dtype} {arr.shape}, its metadata says uint8 {shape}")
        return arr


def read_part(path: Path) -> Part | None:
    """The committed part, or None when it is missing or unreadable (then the study is redone)."""
    try:
        return Part(path)
    except (OSError, ValueError, KeyError, json.JSONDecodeError, zipfile.BadZipFile):
        return None


def clean_stale_tmp(out_dir) -> int:
    """Remove temporary files left by killed workers; returns how many."""
    n = 0
    d = parts_dir(out_dir)
    if d.is_dir():
        for p in d.glob("*.tmp"):
            p.unlink(missing_ok=True)
            n += 1
    return n


def remove_parts(out_dir) -> None:
    """Delete ``OUT/_parts`` (call only once the store is committed: the parts are the only other copy of
    its data). A run killed half-way leaves some parts: each is still valid, so whatever runs next is
    right (see lsdc.preprocess.convert)."""
    d = parts_dir(out_dir)
    if d.exists():
        shutil.rmtree(d)
