"""`lsdc show`: look at what was converted (or localised) before trusting it.

  lsdc show STORE --view V [--study ID] [--n N] [--seed S] [--cols C] [--neighbours K] --out FILE.png
      a montage of stored samples of one view: each sample's centre slice large (the crop the model
      sees framed, the labelled point marked), its K neighbouring slices on each side small beside it
      (-K..-1 left column, +1..+K right column), and under it the study, series, stack, level, side,
      instance and label. --study: every sample of that study (by level, then side; at most --n if given);
      otherwise --n samples (default 12) in a random order fixed by --seed (default 0).

  lsdc show STORE --view V --augment [--draws D] [--config FILE] [--key=value ...] [--study ID] [--n N]
            [--seed S] [--neighbours K] --out FILE.png
      what the training augmentation does to each shown sample (at most 100), one row per sample: its
      eval crop (the model's out_px crop, what validation and predict see), then D (default 3, at most 8)
      draws through the real training loader (its slice window and the torch backend's warp, grey and
      noise), each slice window's centre slice large and its K neighbours (default all) small, numbered
      from the labelled slice, the labelled point crossed where the warp put it, and under each draw its
      params: slice shift, rotation, scale, translation t (the labelled point lands at the centre - t),
      brightness, contrast, gamma, noise std. The ranges are the config's loader section (defaults <
      --config FILE < --key=value, e.g. --max_slice_shift=1 --rotate_deg=5; set one range alone to see
      what it does); augment is on whatever loader.augment says. The draws are fixed by --seed.

  lsdc show --study-dir DATA/<split>_images/STUDY (--localizer DIR | --keypoints FILE) --out FILE.png
      the study's sagittal keypoints drawn on the slices they fall on, one panel per (series, slice):
      canal points on Sagittal T2/STIR, foramina on Sagittal T1, each marked with its level.
      --localizer runs a trained localiser (`lsdc train-localizer`) exactly as `lsdc predict` does
      (volumes made with the localiser's own preprocess config; the most confident series per view);
      --keypoints draws a keypoints.csv written by `lsdc predict --work DIR` instead.

Exit codes: 0 written; 2 bad input (one error line).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import InputError
from ..core.overrides import accept_overrides, load_config
from ..core.schema import (BLANK, DESCRIPTION_OF_VIEW, LEFT_NFN, LEVEL_TITLE, RIGHT_NFN, SAG_T1, SAG_T2, SEVERITIES,
                           SPINAL, VIEW_FROM_DESCRIPTION, VIEWS, parse_id)
from . import montage

DEFAULT_N = 12
MAX_N = 400
SEVERITY_COLORS = ("#7ee07e", "#ffb347", "#ff6b6b")  # Normal/Mild, Moderate, Severe
UNLABELLED_COLOR = "#a0a0a0"
KEYPOINT_COLORS = {SPINAL: (255, 220, 40), LEFT_NFN: (60, 220, 255), RIGHT_NFN: (255, 90, 220)}
KEYPOINT_NAMES = {SPINAL: "canal", LEFT_NFN: "left foramen", RIGHT_NFN: "right foramen"}


def _count(value, flag: str, low: int, high: int | None = None) -> int:
    """An integer option given as text: anything else names the flag and the value."""
    try:
        n = int(str(value).strip())
    except ValueError:
        raise InputError(f"{flag} {value!r}: not an integer") from None
    if n < low or (high is not None and n > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise InputError(f"{flag} {value!r}: must be {bound}")
    return n


def severity_name(label) -> str:
    label = int(label)
    if label == BLANK:
        return "unlabelled"
    if 0 <= label < len(SEVERITIES):
        return SEVERITIES[label]
    return f"label {label}?"


def sample_caption(row: dict) -> tuple[list[str], str]:
    """(caption lines, colour of the last line) of one index.parquet row."""
    stack = f"stack {int(row['stack'])}" if "stack" in row and pd.notna(row["stack"]) else "stack ?"
    label = int(row["label"])
    level = LEVEL_TITLE.get(row["level"], str(row["level"]))
    line1 = f"study {int(row['study_id'])} · series {int(row['series_id'])} · {stack}"
    line2 = f"{level} {row['side']} · {severity_name(label)} · inst {int(row['instance_number'])}"
    color = SEVERITY_COLORS[label] if 0 <= label < len(SEVERITY_COLORS) else UNLABELLED_COLOR
    return [line1, line2], color


def select_samples(index: pd.DataFrame, study=None, n: int | None = None, seed: int = 0,
                   where: str = "the store") -> np.ndarray:
    """Row positions to show: one study's samples in index order (at most n), or n in seeded random order."""
    if study is not None:
        sid = parse_id(study, "--study")
        rows = np.flatnonzero(index["study_id"].to_numpy() == sid)
        if not len(rows):
            have = sorted(set(int(s) for s in index["study_id"]))
            more = f" (it has {len(have)} studies, e.g. {', '.join(map(str, have[:5]))})" if have else ""
            raise InputError(f"--study {sid}: no samples in {where}{more}")
        rows = rows[np.lexsort((rows, index["side_idx"].to_numpy()[rows], index["level_idx"].to_numpy()[rows]))]
        return rows[:n] if n is not None else rows
    order = np.random.default_rng(seed).permutation(len(index))
    return order[:DEFAULT_N if n is None else n]


def _selection(store, view: str, study, n: int | None, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """(index, row positions to show) of a store view (:func:`select_samples`); InputError for a bad or
    empty view. Both store montages choose their samples here, so one seed shows the same samples."""
    from ..store.reader import open_root, read_index
    if view not in VIEWS:
        raise InputError(f"--view {view!r}: not a view; one of {', '.join(VIEWS)}")
    open_root(store)
    index = read_index(store, view)
    where = f"{Path(store) / view}"
    if not len(index):
        raise InputError(f"{where}: no samples in this view")
    return index, select_samples(index, study, n, seed, where)


def _which(study, seed: int) -> str:
    return f"study {parse_id(study, '--study')}" if study is not None else f"seed {seed}"


def show_store(store, view: str, out, study=None, n=None, seed: int = 0, cols: int = 4,
               neighbours: int | None = None) -> dict:
    """Write the sample montage of ``view`` to ``out``; returns {out, samples, of, size, neighbours}."""
    from ..store.reader import crop_spec, crops_array
    n = None if n is None else _count(n, "--n", 1, MAX_N)
    cols = _count(cols, "--cols", 1, 50)
    index, rows = _selection(store, view, study, n, seed)
    spec = crop_spec(store, view)
    arr = crops_array(store, view)
    centre = arr.shape[1] // 2
    k = spec.slices // 2 if neighbours is None else _count(neighbours, "--neighbours", 0, centre)
    k = min(k, centre)
    order = np.argsort(rows, kind="stable")
    got = arr.get_orthogonal_selection((rows[order],))
    stacks = [None] * len(rows)
    for j, o in enumerate(order):
        stacks[o] = got[j]
    records = index.iloc[rows].to_dict("records")
    caps = [sample_caption(r) for r in records]
    title = (f"{Path(store).name} · {view} · {len(rows)} of {len(index)} samples ({_which(study, seed)}) · "
             f"centre slice with the model's {spec.out_px} px crop framed; ±{k} neighbouring slices")
    canvas = montage.sample_montage(stacks, [c[0] for c in caps], k, cols, title,
                                    crop_frac=spec.out_px / spec.store_px, caption_colors=[c[1] for c in caps])
    montage.render_png(canvas, out)
    return {"out": str(out), "samples": len(rows), "of": len(index), "size": canvas.size, "neighbours": k}


# -- augmentation mode ---------------------------------------------------------------------------
DEFAULT_DRAWS = 3
MAX_DRAWS = 8
MAX_AUGMENT_N = 100  # rows of 1 + draws tiles: about the canvas of MAX_N plain samples
AUGMENT_BLOCK = 64  # samples read and augmented at a time (bounds the float32 batch in memory)


def read_windows(store, view: str, rows: np.ndarray, starts: np.ndarray, slices: int) -> np.ndarray:
    """uint8 [len(rows), slices, P, P]: each row's stored slices from ``starts``, cut by the training
    loader's own SampleStream (in the given order), so a drawn shift picks exactly the window training does."""
    from ..loaders.sampling import SampleStream
    from ..store.chunks import StoreReader
    reader = StoreReader(store, view)
    out = np.empty((len(rows), slices) + reader.sample_shape[1:], np.uint8)
    stream = SampleStream(reader, rows, 1, np.random.default_rng(0), starts=starts, slices=slices)  # 1: no shuffle
    try:
        for stacks, pos in stream.batches(max(1, len(rows))):
            out[pos] = stacks
    finally:
        reader.close()
    return out


def grey_images(stacks: np.ndarray, params: dict, spec, channels: int, augment: bool) -> np.ndarray:
    """uint8 [b, S, out_px, out_px]: the grey slices the model is fed for slice windows uint8 [b, S, P, P]
    and their params, made by the torch backend's own ``augment_batch`` (the DALI backend computes the
    same numbers); its normalisation undone exactly (``norm_affine``) and clipped to 0..255 for display
    (noise may leave that range; the model sees it unclipped). Every channel holds the same grey: one is read."""
    import torch
    from ..loaders.augment import norm_affine
    from ..loaders.batching import RawBatch
    from ..loaders.torch_backend import augment_batch
    raw = RawBatch(np.ascontiguousarray(stacks), params, np.zeros(len(stacks), np.int64), {})
    with torch.no_grad():
        x = augment_batch(raw, spec, channels, augment)[:, :, 0].numpy().astype(np.float64)
    scale, offset = norm_affine(channels, grey_max=255.0)  # grey 0..255 whichever path normalised it
    return np.clip(np.rint((x - float(offset[0])) / float(scale[0])), 0, 255).astype(np.uint8)


def fed_images(store, view: str, rows: np.ndarray, params: dict, spec, channels: int, augment: bool) -> np.ndarray:
    """:func:`grey_images` of each (row, params) pair, its window at ``window_starts``, AUGMENT_BLOCK at a time."""
    from ..loaders.augment import take, window_starts
    starts = window_starts(params, spec)
    out = []
    for a in range(0, len(rows), AUGMENT_BLOCK):
        part = slice(a, a + AUGMENT_BLOCK)
        windows = read_windows(store, view, rows[part], starts[part], spec.slices)
        out.append(grey_images(windows, take(params, part), spec, channels, augment))
    return np.concatenate(out)


def centre_marks(params: dict, spec) -> np.ndarray:
    """float [n, 2]: (x, y) where each draw puts the labelled point (the stored field's centre) in the
    out_px image, pixel-centre coordinates. ``affine_matrices`` maps destination -> source, so the
    point is its inverse applied to the source centre: out_px / 2 - t for a pure translation t."""
    from ..loaders.augment import affine_matrices
    m = affine_matrices(params, spec).astype(np.float64)
    src = np.full((len(m), 2), spec.store_px / 2.0)
    return np.linalg.solve(m[:, :, :2], (src - m[:, :, 2])[..., None])[..., 0]


def augment_samples(store, view: str, rows: np.ndarray, lcfg, spec, draws: int, seed: int) -> dict:
    """Each row's eval crop and ``draws`` training-augmentation draws (augment forced on), seeded by ``seed``.

    Returns {"eval": uint8 [n, S, O, O] (identity params, the validation transform), "draws": uint8
    [n, draws, S, O, O], "params": the draws' params (augment.PARAM_KEYS, n * draws long, row-major:
    row i's draw d at i * draws + d), "marks": float [n, draws, 2] (:func:`centre_marks`)}.
    """
    from ..loaders.augment import draw_params, identity_params
    lcfg = dataclasses.replace(lcfg, augment=True)
    rows = np.asarray(rows, np.int64)
    try:
        params = draw_params(np.random.default_rng(seed), lcfg, spec, len(rows) * draws)
    except ValueError as e:  # a slice shift the store has no margin for
        raise InputError(f"--augment on {Path(store) / view}: {e}") from None
    n, S, O = len(rows), spec.slices, spec.out_px
    aug = fed_images(store, view, np.repeat(rows, draws), params, spec, lcfg.channels, True)
    ev = fed_images(store, view, rows, identity_params(n), spec, lcfg.channels, False)
    return {"eval": ev, "draws": aug.reshape(n, draws, S, O, O), "params": params,
            "marks": centre_marks(params, spec).reshape(n, draws, 2)}


def draw_caption(p: dict) -> list[str]:
    """Two lines naming one draw's params (``p``: one value per augment.PARAM_KEYS), geometry then grey."""
    return [f"shift {int(p['shift']):+d} · rot {float(p['angle_deg']):+.1f}° · scale {float(p['scale']):.2f} · "
            f"t {float(p['tx_px']):+.1f},{float(p['ty_px']):+.1f} px",
            f"bright {float(p['brightness']):+.2f} · contr {float(p['contrast']):.2f} · "
            f"gamma {float(p['gamma']):.2f} · noise {float(p['noise_std']):.3f}"]


def augment_tiles(records: list, got: dict, draws: int) -> dict:
    """sample_montage's per-tile lists, one row per sample: its eval crop (its caption), then its draws."""
    tiles = {"stacks": [], "captions": [], "caption_colors": [], "marks": [], "tags": [], "offsets": []}

    def add(*values):  # one tile: stack, caption lines, last line's colour, mark, tag, slice offset
        for key, v in zip(tiles, values):
            tiles[key].append(v)

    for i, rec in enumerate(records):
        lines, color = sample_caption(rec)
        add(got["eval"][i], lines, color, None, "eval", 0)
        for d in range(draws):
            p = {k: v[i * draws + d] for k, v in got["params"].items()}
            add(got["draws"][i, d], draw_caption(p), montage.TEXT, tuple(got["marks"][i, d]), f"draw {d + 1}",
                int(p["shift"]))
    return tiles


def show_augmented(store, view: str, out, lcfg, study=None, n=None, seed: int = 0, draws=DEFAULT_DRAWS,
                   neighbours=None) -> dict:
    """Write the augmentation montage of ``view`` to ``out`` (``lcfg``: the LoaderConfig whose ranges are
    drawn; augment is forced on); returns {out, samples, of, size, neighbours, draws}."""
    from ..store.reader import crop_spec
    draws = _count(draws, "--draws", 1, MAX_DRAWS)
    n = None if n is None else _count(n, "--n", 1, MAX_AUGMENT_N)
    index, rows = _selection(store, view, study, n, seed)
    spec = crop_spec(store, view)
    k = spec.slices // 2 if neighbours is None else _count(neighbours, "--neighbours", 0, spec.slices // 2)
    got = augment_samples(store, view, rows, lcfg, spec, draws, seed)
    tiles = augment_tiles(index.iloc[rows].to_dict("records"), got, draws)
    title = (f"{Path(store).name} · {view} · {len(rows)} of {len(index)} samples ({_which(study, seed)}) · per row: "
             f"the eval crop ({spec.out_px} px), then {draws} training-augmentation draws (seed {seed}); "
             f"red cross: the labelled point after the warp")
    canvas = montage.sample_montage(tiles.pop("stacks"), tiles.pop("captions"), k, 1 + draws, title, **tiles)
    montage.render_png(canvas, out)
    return {"out": str(out), "samples": len(rows), "of": len(index), "size": canvas.size, "neighbours": k,
            "draws": draws}


# -- localiser mode ------------------------------------------------------------------------------
def _study_location(study_dir: Path) -> tuple[int, Path, str | None]:
    """(study_id, data dir, split or None) of DATA/<split>_images/STUDY."""
    if not study_dir.is_dir():
        raise InputError(f"--study-dir {str(study_dir)!r}: no such folder")
    study_id = parse_id(study_dir.name, "--study-dir", column="folder name")
    parent = study_dir.parent.name
    split = parent[:-len("_images")] if parent.endswith("_images") else None
    return study_id, study_dir.parent.parent, split


def study_series_views(study_dir: Path) -> dict[int, str]:
    """series_id -> view of a study folder: from DATA/<split>_series_descriptions.csv when the folder
    sits in the competition layout, else from each series' first DICOM header."""
    from ..core.readers import read_series_descriptions
    study_id, data, split = _study_location(study_dir)
    csv_path = data / f"{split}_series_descriptions.csv" if split else None
    out: dict[int, str] = {}
    if csv_path is not None and csv_path.is_file():
        df = read_series_descriptions(csv_path, strict=False)
        for r in df[df["study_id"] == study_id].itertuples(index=False):
            if r.view is not None and (study_dir / str(r.series_id)).is_dir():
                out[int(r.series_id)] = r.view
        if out:
            return out
    from ..preprocess.series import SeriesError, read_header
    for d in sorted(p for p in study_dir.iterdir() if p.is_dir() and p.name.isdigit()):
        files = sorted(d.glob("*.dcm"))
        if not files:
            continue
        try:
            view = VIEW_FROM_DESCRIPTION.get(read_header(files[0]).description.strip())
        except SeriesError:
            continue
        if view is not None:
            out[int(d.name)] = view
    return out


def localise_study(study_dir, loc_dir, workers: int = 1, progress: bool = False) -> pd.DataFrame:
    """Keypoints (localize.POINT_COLUMNS) of one study folder through `lsdc predict`'s own localise
    step (the study alone, linked into a temporary test split; the most confident series per view)."""
    from ..inference.predict import KEYPOINTS_FILE, StudyClock, localise
    from ..localizer.localize import load_localizer
    from ..train.device import resolve_device
    study_dir = Path(study_dir)
    study_id, _, _ = _study_location(study_dir)
    load_localizer(loc_dir)  # a missing/old localiser is named before any conversion
    views = study_series_views(study_dir)
    if not any(v in (SAG_T2, SAG_T1) for v in views.values()):
        raise InputError(f"--study-dir {str(study_dir)!r}: no Sagittal T1 or T2 series found")
    with tempfile.TemporaryDirectory(prefix="lsdc_show_") as tmp:
        tmp = Path(tmp)
        (tmp / "test_images").mkdir()
        (tmp / "test_images" / str(study_id)).symlink_to(study_dir.resolve(), target_is_directory=True)
        with open(tmp / "test_series_descriptions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["study_id", "series_id", "series_description"])
            for series_id, view in sorted(views.items()):
                w.writerow([study_id, series_id, DESCRIPTION_OF_VIEW[view]])
        work = tmp / "work"
        work.mkdir()
        # its notes are about projecting the subarticular points into axial series, which are not drawn
        localise(tmp, "test", work, loc_dir, StudyClock([study_id]), workers, progress, resolve_device("auto"))
        path = work / KEYPOINTS_FILE
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def read_keypoints(path, study_id: int) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--keypoints {str(path)!r}: no such file")
    df = pd.read_csv(path)
    need = {"study_id", "series_id", "condition", "level", "instance_number", "x", "y"}
    if missing := sorted(need - set(df.columns)):
        raise InputError(f"{path}: missing columns {missing} (expected keypoints.csv of `lsdc predict --work`)")
    df = df[df["study_id"] == study_id]
    if not len(df):
        raise InputError(f"{path}: no keypoints of study {study_id}")
    return df


def slice_image(series_dir: Path, instance_number: int) -> np.ndarray:
    """Intensities of one slice, by InstanceNumber (``<instance>.dcm`` first, else every header)."""
    from ..preprocess.series import SeriesError, index_series, read_slice
    path = series_dir / f"{int(instance_number)}.dcm"
    try:
        if path.is_file():
            header, img = read_slice(path)
            if header.instance_number == int(instance_number):
                return img
        for h in index_series(series_dir):
            if h.instance_number == int(instance_number):
                return read_slice(h.path)[1]
    except SeriesError as e:
        raise InputError(f"{series_dir}: instance {instance_number} unreadable: {e}") from None
    raise InputError(f"{series_dir}: no slice with InstanceNumber {instance_number}")


def keypoint_panels(study_dir: Path, points: pd.DataFrame, views: dict) -> tuple[list, list, list]:
    """(images, marks, captions): one panel per (series, slice) that holds a keypoint, Sagittal T2 first."""
    view_rank = {SAG_T2: 0, SAG_T1: 1}
    pts = points.copy()
    pts["_view"] = [views.get(int(s), v) for s, v in zip(pts["series_id"], pts.get("view", [None] * len(pts)))]
    pts["_rank"] = [view_rank.get(v, 2) for v in pts["_view"]]
    images, marks, captions = [], [], []
    for (_, series_id, inst), g in pts.groupby(["_rank", "series_id", "instance_number"], sort=True):
        view = g["_view"].iloc[0]
        img = slice_image(study_dir / str(int(series_id)), int(inst))
        images.append(montage.window_uint8(img))
        m, names = [], []
        for r in g.itertuples(index=False):
            level = LEVEL_TITLE.get(r.level, str(r.level))
            conf = f" {r.confidence:.2f}" if hasattr(r, "confidence") and pd.notna(r.confidence) else ""
            m.append(montage.Mark(float(r.x), float(r.y), f"{level}{conf}", KEYPOINT_COLORS.get(r.condition, (255, 255, 255))))
            names.append((KEYPOINT_NAMES.get(r.condition, r.condition), level))
        marks.append(m)
        slice_txt = f"slice {int(g['slice_index'].iloc[0])} · " if "slice_index" in g else ""
        desc = DESCRIPTION_OF_VIEW.get(view, str(view))
        kinds = {}
        for kind, lv in names:
            kinds.setdefault(kind, []).append(lv)
        captions.append([f"{desc} · series {int(series_id)} · {slice_txt}instance {int(inst)}",
                         "; ".join(f"{kind}: {' '.join(lvs)}" for kind, lvs in kinds.items())])
    return images, marks, captions


def show_study(study_dir, out, localizer=None, keypoints=None, cols: int = 3, workers: int = 1,
               progress: bool = False) -> dict:
    """Write the keypoint panels of one study folder to ``out``; returns {out, keypoints, panels, size}."""
    study_dir = Path(study_dir)
    if (localizer is None) == (keypoints is None):
        raise InputError("--study-dir needs exactly one of --localizer DIR or --keypoints FILE")
    cols = _count(cols, "--cols", 1, 50)
    workers = _count(workers, "--workers", 1)
    study_id, _, _ = _study_location(study_dir)
    views = study_series_views(study_dir)
    if localizer is not None:
        points = localise_study(study_dir, localizer, workers, progress)
        source = f"localiser {Path(localizer).name}"
    else:
        points = read_keypoints(keypoints, study_id)
        source = f"keypoints {Path(keypoints).name}"
    if not len(points):
        raise InputError(f"--study-dir {str(study_dir)!r}: no keypoints found (no readable sagittal series?)")
    images, marks, captions = keypoint_panels(study_dir, points, views)
    title = f"study {study_id} · {source} · {len(points)} keypoints on {len(images)} slices"
    canvas = montage.panel_montage(images, marks, captions, cols, title)
    montage.render_png(canvas, out)
    return {"out": str(out), "keypoints": int(len(points)), "panels": len(images), "size": canvas.size}


# -- CLI -------------------------------------------------------------------------------------------
def configure(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = __doc__
    p.add_argument("store", nargs="?", default=None, help="store written by `lsdc preprocess` (sample montage)")
    p.add_argument("--view", default=None, metavar="V", help=f"sample montage: one of {', '.join(VIEWS)}")
    p.add_argument("--study", default=None, metavar="ID", help="sample montage: every sample of this study")
    p.add_argument("--n", default=None, metavar="N",
                   help=f"sample montage: samples to show (default {DEFAULT_N}; with --study, all of the study)")
    p.add_argument("--seed", default="0", metavar="S",
                   help="sample montage: seed of the random order and of the --augment draws (default 0)")
    p.add_argument("--neighbours", default=None, metavar="K",
                   help="sample montage: slices shown on each side of the centre (default: the model's window)")
    p.add_argument("--augment", action="store_true",
                   help="sample montage: each sample's eval crop, then --draws training-augmentation draws")
    p.add_argument("--draws", default=None, metavar="D",
                   help=f"--augment: augmented draws per sample (default {DEFAULT_DRAWS}, at most {MAX_DRAWS})")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="--augment: YAML config whose loader section gives the augmentation ranges")
    p.add_argument("--study-dir", default=None, metavar="DIR",
                   help="keypoint panels: a study folder, DATA/<split>_images/STUDY")
    p.add_argument("--localizer", default=None, metavar="DIR", help="keypoint panels: a `lsdc train-localizer` directory")
    p.add_argument("--keypoints", default=None, metavar="FILE",
                   help="keypoint panels: keypoints.csv of `lsdc predict --work DIR` instead of --localizer")
    p.add_argument("--workers", default="1", metavar="W", help="keypoint panels: conversion workers (default 1)")
    p.add_argument("--cols", default=None, metavar="C", help="tiles per row (default 4 samples, 3 panels)")
    p.add_argument("--out", required=True, metavar="FILE.png", help="PNG to write")
    p.add_argument("--no-progress", action="store_true")
    accept_overrides(p, ("loader",))


def _augment_options(args) -> list[str]:
    """The augmentation options given on the line (each is an error without --augment or with --study-dir)."""
    given = ["--augment"] if args.augment else []
    given += [flag for flag, v in (("--draws", args.draws), ("--config", args.config)) if v is not None]
    return given + list(args.overrides)


def run_augmented(args) -> int:
    if args.cols is not None:
        raise InputError("--cols: with --augment each row is one sample (its eval crop, then its --draws draws)")
    cfg = load_config(args.config, args.overrides)
    s = show_augmented(args.store, args.view, args.out, cfg.loader, args.study, args.n, _count(args.seed, "--seed", 0),
                       DEFAULT_DRAWS if args.draws is None else args.draws, args.neighbours)
    print(f"wrote {s['out']} ({s['size'][0]} x {s['size'][1]} px): {s['samples']} of {s['of']} {args.view} samples, "
          f"each its eval crop and {s['draws']} augmented draws, ±{s['neighbours']} slices")
    return 0


def run(args) -> int:
    extra = _augment_options(args)
    if args.study_dir is not None:
        if extra:
            raise InputError(f"{extra[0]} shows the training augmentation of a STORE's samples, not --study-dir")
        if args.store is not None or args.view is not None or args.study is not None:
            raise InputError("--study-dir draws keypoints on one study folder: give no STORE, --view or --study with it")
        s = show_study(args.study_dir, args.out, args.localizer, args.keypoints,
                       3 if args.cols is None else args.cols, args.workers, progress=not args.no_progress)
        print(f"wrote {s['out']} ({s['size'][0]} x {s['size'][1]} px): {s['keypoints']} keypoints on {s['panels']} slices")
        return 0
    if args.store is None:
        raise InputError("give a STORE (with --view) or --study-dir DIR (with --localizer or --keypoints)")
    if args.localizer is not None or args.keypoints is not None:
        raise InputError("--localizer/--keypoints go with --study-dir, not with a STORE")
    if args.view is None:
        raise InputError(f"--view is required with a STORE: one of {', '.join(VIEWS)}")
    if args.augment:
        return run_augmented(args)
    if extra:
        raise InputError(f"{extra[0]} sets up the augmentation montage: add --augment")
    s = show_store(args.store, args.view, args.out, args.study, args.n, _count(args.seed, "--seed", 0),
                   4 if args.cols is None else args.cols, args.neighbours)
    print(f"wrote {s['out']} ({s['size'][0]} x {s['size'][1]} px): {s['samples']} of {s['of']} {args.view} samples, "
          f"±{s['neighbours']} slices")
    return 0
