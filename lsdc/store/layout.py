"""The store contract: what a converted store holds, where, and in which version.

A store is one Zarr v3 group of level-centred crops, written once by ``lsdc preprocess``
(:mod:`lsdc.store.writer`) and read by every later stage (:mod:`lsdc.store.reader`,
:mod:`lsdc.store.chunks`). The README's "The store" section describes the same layout for users.

    OUT/zarr.json                      root group; attrs: crop spec, versions, input fingerprint, counts
    OUT/<view>/crops                   uint8 [N, S, H, W], chunks of `chunk_samples` samples, Blosc-LZ4
    OUT/<view>/index.parquet           row i describes crops[i] (INDEX_COLUMNS); ``stack`` is the
                                       series' stack (see lsdc.preprocess.stacks) its slices come
                                       from, ``slice_index`` counts in it
    OUT/<view>/volumes                 sagittal views only: uint8 [M, volume_slices, volume_px, volume_px]
    OUT/<view>/volumes.parquet         row j describes volumes[j] (VOLUME_INDEX_COLUMNS): the geometry
                                       of the series' largest stack
    OUT/report.json                    counts, the store's fingerprint and every skipped study/series/
                                       label with its reason (:mod:`lsdc.store.reasons`); written last:
                                       a store with a report is complete (writer.commit)
    OUT/_parts/<study_id>.npz          committed studies (resume, shards); the store is assembled from
                                       them, and they are deleted once it is committed (unless kept)

``S`` is the view's ``store_slices`` and ``H = W`` its ``store_px`` (see ``CropSpec``); the crop spec
itself is in the root attrs under ``preprocess`` and is never restated by a later stage.
"""
from __future__ import annotations

from ..core.schema import SAG_T1, SAG_T2

STORE_VERSION = 2  # 2: stacks (index `stack`, `stack_slices`; volumes `stack`)
VERSION_ATTR = "lsdc_store_version"
VOLUME_VIEWS = (SAG_T2, SAG_T1)
CROPS, VOLUMES = "crops", "volumes"
INDEX_FILE = "index.parquet"
VOLUME_INDEX_FILE = "volumes.parquet"
REPORT_FILE = "report.json"
PARTS_DIR = "_parts"

#: index.parquet columns (row i describes crops[i])
INDEX_COLUMNS = (
    "study_id", "series_id", "condition", "level", "side", "label", "level_idx", "side_idx",
    "instance_number", "slice_index", "n_slices", "stack", "stack_slices", "x_px", "y_px", "x_mm", "y_mm", "z_mm",
    "spacing_row_mm", "spacing_col_mm", "box_mm", "box_px", "box_col0", "box_row0", "box_col1", "box_row1")
#: volumes.parquet columns (row j describes volumes[j]); positions/iop/instance_numbers are JSON lists
VOLUME_INDEX_COLUMNS = ("study_id", "series_id", "view", "stack", "n_slices", "rows", "cols", "spacing_row_mm",
                        "spacing_col_mm", "iop", "positions", "instance_numbers")
