"""Reading a store back: every later stage opens, checks and reads a store through these.

:func:`open_root` refuses anything that is not a store of this version; :func:`store_preprocess_config`
is the crop spec it was written with; the index tables and the zarr arrays (the general, slower
path; :mod:`lsdc.store.chunks` is the fast one) are read per view.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from ..core.config import CropSpec, PreprocessConfig
from ..core.errors import InputError
from ..core.schema import CENTER, LEFT, RIGHT, SIDES
from .chunks import StoreReader
from .layout import CROPS, INDEX_FILE, STORE_VERSION, VERSION_ATTR, VOLUME_INDEX_FILE, VOLUMES


def open_root(store) -> zarr.Group:
    path = Path(store)
    if not (path / "zarr.json").is_file():
        raise InputError(f"{path}: not an lsdc store (no zarr.json); run `lsdc preprocess` first")
    root = zarr.open_group(path, mode="r")
    if root.attrs.get(VERSION_ATTR) != STORE_VERSION:
        raise InputError(f"{path}: store version {root.attrs.get(VERSION_ATTR)!r}, "
                         f"this lsdc reads version {STORE_VERSION}; convert again")
    return root


def store_preprocess_config(store) -> PreprocessConfig:
    """The crop spec the store was written with (never restated by later stages)."""
    from ..core.overrides import config_from_dict
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
    return zarr.open_array(Path(store) / view / CROPS, mode="r")


def volumes_array(store, view: str):
    return zarr.open_array(Path(store) / view / VOLUMES, mode="r")


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
