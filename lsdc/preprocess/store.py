"""The store contract: a Zarr v3 group of level-centred crops, and its assembly from study parts.

Layout (documented in README "The store"):

    OUT/zarr.json                      root group; attrs: crop spec, versions, input fingerprint, counts
    OUT/<view>/crops                   uint8 [N, S, H, W], chunks of `chunk_samples` samples, Blosc-LZ4
    OUT/<view>/index.parquet           row i describes crops[i]; ``stack`` is the series' stack (see
                                       lsdc.preprocess.stacks) its slices come from, ``slice_index`` counts in it
    OUT/<view>/volumes                 sagittal views only: uint8 [M, volume_slices, volume_px, volume_px]
    OUT/<view>/volumes.parquet         row j describes volumes[j]: the geometry of the series' largest stack
    OUT/report.json                    counts and every skipped study/series/label with its reason
    OUT/_parts/<study_id>.npz          committed studies (resume, shards); the store is assembled from them
"""
from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import BloscCodec

from ..core.config import CropSpec, PreprocessConfig
from ..core.errors import InputError
from ..core.schema import SAG_T1, SAG_T2, VIEWS

STORE_VERSION = 2  # 2: stacks (index `stack`, `stack_slices`; volumes `stack`)
VOLUME_VIEWS = (SAG_T2, SAG_T1)
INDEX_FILE = "index.parquet"
VOLUME_INDEX_FILE = "volumes.parquet"
_BUILDING = ".building"

#: index.parquet columns (row i describes crops[i]); see README "The store"
INDEX_COLUMNS = (
    "study_id", "series_id", "condition", "level", "side", "label", "level_idx", "side_idx",
    "instance_number", "slice_index", "n_slices", "stack", "stack_slices", "x_px", "y_px", "x_mm", "y_mm", "z_mm",
    "spacing_row_mm", "spacing_col_mm", "box_mm", "box_px", "box_col0", "box_row0", "box_col1", "box_row1")
#: volumes.parquet columns (row j describes volumes[j]); positions/iop/instance_numbers are JSON lists
VOLUME_INDEX_COLUMNS = ("study_id", "series_id", "view", "stack", "n_slices", "rows", "cols", "spacing_row_mm",
                        "spacing_col_mm", "iop", "positions", "instance_numbers")


def _codec() -> BloscCodec:
    # Decode speed decides (the loader reads each chunk every epoch). Measured on 32 x 11 x 148 x 148
    # uint8 crops: LZ4 without shuffle decodes in 2.4 ms (ratio 1.08); with bit-shuffle 10.6 ms
    # (ratio 1.28), which would make the codec the loader's bottleneck. MR noise leaves little to
    # compress either way.
    return BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")


# Every chunk holds real samples, so skip zarr's all-fill-value test of each chunk before writing it
# (it cost as much as compressing the chunk); every chunk file then exists, as the loader expects.
_WRITE_CONFIG = {"write_empty_chunks": True}


class _ChunkWriter:
    """Appends samples to a Zarr array in whole, chunk-aligned blocks (memory: one chunk + one study)."""

    def __init__(self, array, chunk: int):
        self.array, self.chunk, self.pos, self.buf = array, chunk, 0, []

    def add(self, block: np.ndarray | None) -> None:
        if block is not None and len(block):
            self.buf.append(block)
        if sum(len(b) for b in self.buf) >= self.chunk:
            self._flush(whole_chunks_only=True)

    def _flush(self, whole_chunks_only: bool) -> None:
        if not self.buf:
            return
        data = np.concatenate(self.buf)
        n = len(data) - len(data) % self.chunk if whole_chunks_only else len(data)
        if n:
            self.array[self.pos:self.pos + n] = data[:n]
            self.pos += n
        self.buf = [data[n:]] if n < len(data) else []

    def close(self) -> int:
        self._flush(whole_chunks_only=False)
        return self.pos


def _write_view(folder: Path, parts, view: str, pcfg: PreprocessConfig) -> dict:
    spec = pcfg.spec(view)
    group = zarr.open_group(folder, mode="w")
    rows = [r for p in parts for r in p.rows(view)]
    shape = (len(rows), spec.store_slices, spec.store_px, spec.store_px)
    crops = group.create_array("crops", shape=shape, chunks=(pcfg.chunk_samples,) + shape[1:], dtype="uint8",
                               compressors=_codec(), fill_value=0, config=_WRITE_CONFIG)
    writer = _ChunkWriter(crops, pcfg.chunk_samples)
    for p in parts:
        writer.add(p.array("crops", view))
    assert writer.close() == len(rows), "crop count differs from index rows"
    pd.DataFrame(rows, columns=list(INDEX_COLUMNS)).to_parquet(folder / INDEX_FILE, index=False)
    counts = {"samples": len(rows), "studies": len({r["study_id"] for r in rows})}
    if view in VOLUME_VIEWS:
        vrows = [r for p in parts for r in p.volume_rows(view)]
        vshape = (len(vrows), pcfg.volume_slices, pcfg.volume_px, pcfg.volume_px)
        vols = group.create_array("volumes", shape=vshape, chunks=(1,) + vshape[1:], dtype="uint8",
                                  compressors=_codec(), fill_value=0, config=_WRITE_CONFIG)
        vwriter = _ChunkWriter(vols, 1)
        for p in parts:
            vwriter.add(p.array("volumes", view))
        assert vwriter.close() == len(vrows), "volume count differs from volume rows"
        pd.DataFrame(vrows, columns=list(VOLUME_INDEX_COLUMNS)).to_parquet(folder / VOLUME_INDEX_FILE, index=False)
        counts["volumes"] = len(vrows)
    return counts


def assemble(out_dir, parts: list, pcfg: PreprocessConfig, attrs: dict) -> dict:
    """(Re)build every view of the store from committed parts (given in study order).

    Each view is written beside the store and swapped in by rename; root attributes go last, so an
    interrupted assembly is simply run again.
    """
    out_dir = Path(out_dir)
    root = zarr.open_group(out_dir, mode="a")
    counts = {}
    for view in VIEWS:
        building = out_dir / _BUILDING / view
        shutil.rmtree(building, ignore_errors=True)
        counts[view] = _write_view(building, parts, view, pcfg)
        final = out_dir / view
        if final.exists():
            shutil.rmtree(final)
        building.rename(final)
    shutil.rmtree(out_dir / _BUILDING, ignore_errors=True)
    root.attrs.update({**attrs, "lsdc_store_version": STORE_VERSION, "counts": counts,
                       "preprocess": asdict(pcfg)})
    return counts


# -- reading the contract back (every later stage goes through these) ---------------------------
def open_root(store) -> zarr.Group:
    path = Path(store)
    if not (path / "zarr.json").is_file():
        raise InputError(f"{path}: not an lsdc store (no zarr.json); run `lsdc preprocess` first")
    root = zarr.open_group(path, mode="r")
    if root.attrs.get("lsdc_store_version") != STORE_VERSION:
        raise InputError(f"{path}: store version {root.attrs.get('lsdc_store_version')!r}, "
                         f"this lsdc reads version {STORE_VERSION}; convert again")
    return root


def store_preprocess_config(store) -> PreprocessConfig:
    """The crop spec the store was written with (never restated by later stages)."""
    from ..core.config import config_from_dict
    return config_from_dict({"preprocess": dict(open_root(store).attrs["preprocess"])}).preprocess


def crop_spec(store, view: str) -> CropSpec:
    return store_preprocess_config(store).spec(view)


def read_index(store, view: str) -> pd.DataFrame:
    path = Path(store) / view / INDEX_FILE
    if not path.is_file():
        raise InputError(f"{path}: missing; the store has no {view} view")
    return pd.read_parquet(path)


def read_volume_index(store, view: str) -> pd.DataFrame:
    path = Path(store) / view / VOLUME_INDEX_FILE
    if not path.is_file():
        raise InputError(f"{path}: missing; the store has no {view} volumes")
    return pd.read_parquet(path)


def crops_array(store, view: str):
    return zarr.open_array(Path(store) / view / "crops", mode="r")


def volumes_array(store, view: str):
    return zarr.open_array(Path(store) / view / "volumes", mode="r")
