"""Loaders: the fast reader vs zarr-python, epochs/shards, params, and every backend on real stores.

One store is made by the real pipeline (conftest's ``small_dataset``, 3 synthetic studies -> ``preprocess``
with 4-sample chunks so an epoch spans many chunks); a second, "marker" store is written directly in the same
layout, with a bright dot at the same off-centre place on every slice, to check that augmentation is
stack-consistent.
DALI tests run in DALI's CPU-only mode and are skipped only when nvidia-dali is not installed.
"""
from __future__ import annotations

import dataclasses
import logging
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from zarr.codecs import BloscCodec

from lsdc.core.config import CropSpec, LoaderConfig, PreprocessConfig
from lsdc.core.errors import InputError
from lsdc.core.overrides import build_config
from lsdc.core.schema import AX_T2, SAG_T1, SAG_T2
from lsdc.loaders.augment import PARAM_KEYS, draw_params, identity_params, max_translate_px, shift_distribution
from lsdc.loaders.batching import EpochPlan
from lsdc.loaders.factory import create_loader
from lsdc.benchmarks.dicom_baseline import create_dicom_loader
from lsdc.loaders.base import Loader
from lsdc.loaders.sampling import epoch_order, shard, split_batches
from lsdc.store.chunks import StoreReader
from lsdc.store.layout import STORE_VERSION
from lsdc.store.reader import crops_array, open_view, read_index

BATCH = 4
DOT = (40, 95)  # (row, col) of the marker dot in the stored 148 px frame, off-centre


def _needs_dali():
    pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")


def _cfg(backend="torch", augment=True, workers=0, **loader):
    return build_config({"loader": {"backend": backend, "augment": augment, "workers": workers, **loader},
                         "train": {"batch_size": BATCH, "seed": 7}, "preprocess": {"chunk_samples": 4}})


@pytest.fixture(scope="module")
def synth_store(synth_factory, small_dataset):
    return small_dataset, synth_factory.store(small_dataset, ["--preprocess.chunk_samples=4"])


def write_store(path, crops: np.ndarray, index: pd.DataFrame, pcfg: PreprocessConfig, view=SAG_T2):
    """A store in the contract layout (store.py), written directly with zarr."""
    root = zarr.open_group(path, mode="w")
    g = root.create_group(view)
    arr = g.create_array("crops", shape=crops.shape, chunks=(pcfg.chunk_samples,) + crops.shape[1:], dtype="uint8",
                         compressors=BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"), fill_value=0)
    arr[:] = crops
    index.to_parquet(path / view / "index.parquet", index=False)
    root.attrs.update({"lsdc_store_version": STORE_VERSION, "preprocess": dataclasses.asdict(pcfg)})
    return path


@pytest.fixture(scope="module")
def marker_store(tmp_path_factory):
    pcfg = PreprocessConfig(chunk_samples=4)
    spec = pcfg.spec(SAG_T2)
    n, S, P = 10, spec.store_slices, spec.store_px
    crops = np.full((n, S, P, P), 30, np.uint8)
    crops[:, :, DOT[0] - 2:DOT[0] + 3, DOT[1] - 2:DOT[1] + 3] = 250
    crops[8:] = 0  # two all-fill samples: zarr writes no file for chunk 2, the reader must fill it
    index = pd.DataFrame({"study_id": np.arange(n) // 2, "label": np.arange(n) % 3, "level_idx": np.arange(n) % 5,
                          "side": "center", "side_idx": 0})
    return write_store(tmp_path_factory.mktemp("marker") / "store", crops, index, pcfg)


def _epoch(loader, epoch=0):
    loader.set_epoch(epoch)
    return list(loader)


def _cat(batches, key):
    return torch.cat([b[key] for b in batches])


# -- reader ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("view", [SAG_T2, SAG_T1, AX_T2])
def test_reader_matches_zarr_exactly(synth_store, view):
    _, store = synth_store
    reader = StoreReader(store, view)
    assert reader.direct, "the converter's layout must take the fast path"
    want = crops_array(store, view)[:]
    rows = np.random.default_rng(0).permutation(len(reader))
    np.testing.assert_array_equal(reader.read(rows), want[rows])
    slow = StoreReader(store, view)
    slow.direct = False  # the zarr-python fallback gives the same bytes
    np.testing.assert_array_equal(slow.read(rows), want[rows])


def test_reader_fills_unwritten_chunks(marker_store):
    reader = StoreReader(marker_store, SAG_T2)
    assert not reader.chunk_path(2).exists()
    np.testing.assert_array_equal(reader.read(np.arange(10)), crops_array(marker_store, SAG_T2)[:])


def test_reader_falls_back_on_unknown_codecs(tmp_path):
    pcfg = PreprocessConfig(chunk_samples=2)
    spec = pcfg.spec(SAG_T2)
    crops = np.random.default_rng(0).integers(0, 255, (3, spec.store_slices, spec.store_px, spec.store_px), np.uint8)
    root = zarr.open_group(tmp_path, mode="w").create_group(SAG_T2)
    root.create_array("crops", data=crops, chunks=(2,) + crops.shape[1:], compressors=zarr.codecs.ZstdCodec())
    reader = StoreReader(tmp_path, SAG_T2)
    assert not reader.direct
    np.testing.assert_array_equal(reader.read([2, 0]), crops[[2, 0]])


def test_stream_batches_window_shuffle_and_ring(synth_store):
    from lsdc.loaders.sampling import SampleStream, epoch_rng
    _, store = synth_store
    reader = StoreReader(store, SAG_T1)
    order = epoch_order(np.arange(len(reader)), reader.chunk, seed=0, epoch=0, shuffle=True)
    starts = np.random.default_rng(0).integers(0, 5, len(order))
    stored = reader.read(np.arange(len(reader)))
    got = {}
    for ring in (0, 2):
        stream = SampleStream(reader, order, 8, epoch_rng(0, 0, 1), starts=starts, slices=7)
        batches = [(x.copy(), k) for x, k in stream.batches(5, ring=ring)]
        assert [len(k) for _, k in batches][:-1] == [5] * (len(batches) - 1)
        ks = np.concatenate([k for _, k in batches])
        assert sorted(ks) == list(range(len(order))) and not np.array_equal(ks, np.arange(len(order)))
        for x, k in batches:
            for xi, ki in zip(x, k):
                np.testing.assert_array_equal(xi, stored[order[ki], starts[ki]:starts[ki] + 7])
        got[ring] = ks
    np.testing.assert_array_equal(got[0], got[2])  # reusing buffers changes nothing but allocation


# -- epochs, shards, params ----------------------------------------------------------------------------
def test_epoch_order_is_seeded_chunkwise_and_complete():
    rows = np.array([0, 1, 2, 5, 6, 9, 10, 11, 12, 13, 20, 21, 30])
    a = epoch_order(rows, 4, seed=1, epoch=0, shuffle=True)
    assert sorted(a) == sorted(rows)
    assert len(set((a // 4)[np.r_[True, a[1:] // 4 != a[:-1] // 4]])) == len(set(rows // 4))  # one run per chunk
    np.testing.assert_array_equal(a, epoch_order(rows, 4, seed=1, epoch=0, shuffle=True))
    assert any(not np.array_equal(a, epoch_order(rows, 4, seed=1, epoch=e, shuffle=True)) for e in (1, 2))
    np.testing.assert_array_equal(epoch_order(rows, 4, 1, 0, shuffle=False), rows)


@pytest.mark.parametrize("n,world", [(13, 2), (12, 3), (5, 4), (1, 2)])
def test_shard_is_disjoint_equal_and_covers(n, world):
    order = np.arange(100, 100 + n)
    shares = [shard(order, r, world) for r in range(world)]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == -(-n // world)
    assert set(np.concatenate(shares)) == set(order)
    real = [s[:len(np.unique(s))] for s in shares]  # padding only repeats rows at the end of a share
    if n >= world:
        assert sum(len(set(s)) for s in real) == n  # disjoint before padding


def test_split_batches_whole_batches():
    parts = split_batches(np.arange(23), 3, 4)
    assert [len(p) for p in parts] == [8, 8, 7]  # 6 batches: 2 per part, the short one last
    assert [len(p) for p in split_batches(np.arange(20), 2, 4)] == [8, 12]
    np.testing.assert_array_equal(np.concatenate(parts), np.arange(23))


def test_balanced_draw_oversamples_minority():
    labels = np.array([0] * 90 + [1] * 8 + [2] * 2 + [-1] * 5)
    order = epoch_order(np.arange(len(labels)), 8, seed=0, epoch=0, shuffle=True, labels=labels)
    assert len(order) == len(labels) and (labels[order] >= 0).all()
    counts = np.bincount(labels[order], minlength=3)
    assert counts.min() > 0.15 * len(order)


def test_draw_params_ranges_and_identity():
    spec, lcfg = CropSpec(), _cfg().loader
    p = draw_params(np.random.default_rng(0), lcfg, spec, 500)
    assert set(p) == set(PARAM_KEYS) and all(len(v) == 500 for v in p.values())
    assert p["shift"].min() == -lcfg.max_slice_shift and p["shift"].max() == lcfg.max_slice_shift
    assert np.abs(p["angle_deg"]).max() <= lcfg.rotate_deg and np.abs(p["scale"] - 1).max() <= lcfg.scale_range
    t = max_translate_px(lcfg, spec)
    assert 0 < t <= (spec.store_px - spec.out_px) / 2 and np.abs(p["tx_px"]).max() <= t
    assert (p["noise_std"] >= 0).all() and (p["noise_std"] <= lcfg.noise_std).all()
    off = draw_params(np.random.default_rng(0), dataclasses.replace(lcfg, augment=False), spec, 3)
    for k, v in identity_params(3).items():
        np.testing.assert_array_equal(off[k], v)


def test_raw_batches_take_the_drawn_slice_window(synth_store):
    _, store = synth_store
    reader, meta = open_view(store, SAG_T1)
    spec = CropSpec()
    plan = EpochPlan.create(reader, meta, None, spec, _cfg().loader, BATCH, seed=3, train=True)
    stored = reader.read(np.arange(len(reader)))
    starts = []
    for raw in plan.batches(0):
        for i, r in enumerate(raw.row):
            s = spec.slice_margin + raw.params["shift"][i]
            np.testing.assert_array_equal(raw.stacks[i], stored[r, s:s + spec.slices])
            starts.append(s)
    assert len(set(starts)) > 1


# -- backends -------------------------------------------------------------------------------------------
BACKENDS = ["torch", "dali", "dicom"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_epoch_shapes_labels_and_sample_set(synth_store, backend):
    if backend == "dali":
        _needs_dali()
    data, store = synth_store
    index = read_index(store, SAG_T1)
    rows = np.arange(len(index))[::2][::-1].copy()  # a "fold": any subset, any order
    seen = []
    for rank in range(2):
        if backend == "dicom":  # the benchmark baseline keeps the contract, outside the training backends
            loader = create_dicom_loader(_cfg("torch"), store, SAG_T1, data, rows, rank=rank, world=2)
        else:
            loader = create_loader(_cfg(backend), store, SAG_T1, rows, train=True, rank=rank, world=2)
        assert isinstance(loader, Loader)
        assert loader.backend == backend
        batches = _epoch(loader)
        assert len(batches) == len(loader)
        for b in batches:
            B = len(b["row"])
            assert b["image"].shape == (B, 7, 3, 128, 128) and b["image"].dtype == torch.float32
            assert torch.isfinite(b["image"]).all()
            for k in ("label", "level", "side", "row", "study_id"):
                assert b[k].shape == (B,) and b[k].dtype == torch.int64, k
        r = _cat(batches, "row").numpy()
        assert len(r) == loader.num_samples == -(-len(rows) // 2)
        np.testing.assert_array_equal(_cat(batches, "label").numpy(), index["label"].to_numpy()[r])
        np.testing.assert_array_equal(_cat(batches, "level").numpy(), index["level_idx"].to_numpy()[r])
        np.testing.assert_array_equal(_cat(batches, "study_id").numpy(), index["study_id"].to_numpy()[r])
        np.testing.assert_array_equal(_cat(batches, "side").numpy(), (index["side"].to_numpy()[r] == "right"))
        seen.append(r)
    assert set(seen[0]) | set(seen[1]) == set(rows)
    assert not set(seen[0]) & set(seen[1])  # disjoint: a short share pads with its own rows


@pytest.mark.dali
@pytest.mark.parametrize("augment,channels,atol", [(False, 3, 1e-5), (True, 3, 5e-3), (False, 1, 1e-5)])
def test_dali_equals_torch(synth_store, augment, channels, atol):
    """Same rows, same params -> same tensors: equal up to float rounding without augmentation
    (tolerance 1e-5), within 5e-3 (normalised units, ~0.3 grey levels) with it (bilinear weights)."""
    _needs_dali()
    _, store = synth_store
    out = {}
    for backend in ("torch", "dali"):
        loader = create_loader(_cfg(backend, augment, channels=channels), store, AX_T2, None, train=True)
        out[backend] = _epoch(loader, epoch=1)
    assert len(out["torch"]) == len(out["dali"])
    for a, b in zip(out["torch"], out["dali"]):
        for k in ("row", "label", "level", "side", "study_id"):
            assert torch.equal(a[k], b[k]), k
        assert a["image"].shape[2] == channels
        torch.testing.assert_close(b["image"], a["image"], atol=atol, rtol=0)


def _dot_centres(image: torch.Tensor) -> torch.Tensor:
    """(B, S, 2) centroid (row, col) of the bright pixels of channel 0."""
    x = image[:, :, 0]
    w = (x > (x.amax(dim=(-2, -1), keepdim=True) + x.amin(dim=(-2, -1), keepdim=True)) / 2).float()
    rr, cc = torch.meshgrid(torch.arange(x.shape[-2]), torch.arange(x.shape[-1]), indexing="ij")
    n = w.sum((-2, -1))
    return torch.stack([(w * rr).sum((-2, -1)) / n, (w * cc).sum((-2, -1)) / n], -1)


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_augmentation_is_stack_consistent(marker_store, backend):
    if backend == "dali":
        _needs_dali()
    rows = np.arange(8)  # the samples with a marker
    plain = _cat(_epoch(create_loader(_cfg(backend, False), marker_store, SAG_T2, rows, train=True)), "image")
    # noise differs per slice by design (its bank has one field per slice): switch it off to see geometry
    loader = create_loader(_cfg(backend, True, noise_std=0.0), marker_store, SAG_T2, rows, train=True)
    aug = _cat(_epoch(loader), "image")
    c0, c1 = _dot_centres(plain), _dot_centres(aug)
    off = (CropSpec().store_px - CropSpec().out_px) / 2
    assert torch.allclose(c0, torch.tensor([DOT[0] - off, DOT[1] - off]).expand_as(c0))
    assert (c1 - c1[:, :1]).abs().max() < 1e-3  # one transform for every slice of a sample
    moved = (c1[:, 0] - c0[:, 0]).norm(dim=-1)
    assert (moved > 1.0).float().mean() >= 0.75  # and it did move the dot


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_seeded_order_repeats_and_epochs_differ(synth_store, backend):
    if backend == "dali":
        _needs_dali()
    _, store = synth_store
    a = create_loader(_cfg(backend), store, SAG_T1, None, train=True)
    b = create_loader(_cfg(backend), store, SAG_T1, None, train=True)
    e0a, e0b = _epoch(a, 0), _epoch(b, 0)
    for x, y in zip(e0a, e0b):
        assert torch.equal(x["row"], y["row"]) and torch.equal(x["image"], y["image"])
    e1 = _epoch(a, 1)
    assert not torch.equal(_cat(e0a, "row"), _cat(e1, "row"))
    assert sorted(_cat(e0a, "row").tolist()) == sorted(_cat(e1, "row").tolist())
    again = _epoch(a, 0)  # reusing a loader (and DALI's pipeline) reproduces epoch 0
    assert torch.equal(_cat(again, "row"), _cat(e0a, "row"))


@pytest.mark.dali
def test_dali_survives_an_abandoned_epoch(synth_store):
    _needs_dali()
    _, store = synth_store
    loader = create_loader(_cfg("dali"), store, SAG_T1, None, train=True)
    it = iter(loader)
    next(it)
    del it  # a capped epoch (train.max_steps_per_epoch) stops early
    full = _epoch(loader, 1)
    assert len(full) == len(loader) and len(_cat(full, "row")) == loader.num_samples


def test_torch_workers_fork_and_spawn(synth_store):
    _, store = synth_store
    rows = {}
    for context in ("fork", "spawn"):
        loader = create_loader(_cfg("torch", workers=2), store, SAG_T1, None, train=True, mp_context=context)
        batches = _epoch(loader, 2)
        assert len(batches) == len(loader)
        rows[context] = _cat(batches, "row")
        assert sorted(rows[context].tolist()) == list(range(loader.num_samples))
    assert torch.equal(rows["fork"], rows["spawn"])  # batches depend on (seed, epoch, workers) only
    # the persistent workers follow set_epoch, also after an epoch abandoned half-way
    it = iter(loader)
    next(it)
    del it
    assert not torch.equal(_cat(_epoch(loader, 3), "row"), rows["spawn"])
    assert torch.equal(_cat(_epoch(loader, 2), "row"), rows["spawn"])


def test_backend_choice_is_logged_and_exposed(synth_store, caplog):
    _, store = synth_store
    with caplog.at_level(logging.INFO, logger="lsdc.loaders"):
        loader = create_loader(_cfg("auto"), store, SAG_T2, None, train=False)
    try:
        import nvidia.dali  # noqa: F401
        want = "dali"
    except ImportError:
        want = "torch"
    assert loader.backend == want
    assert any(f"backend={want}" in r.getMessage() for r in caplog.records)


def test_auto_without_dali_uses_torch_and_says_so_once(synth_store, caplog, monkeypatch):
    """A host without the DALI extra (macOS, a CUDA-12 box with the cu13 wheel missing): auto falls back to
    torch with one warning naming the extras, however many loaders the run builds."""
    from lsdc.loaders import factory
    _, store = synth_store
    for mod in ("nvidia.dali", "nvidia.dali.plugin", "nvidia.dali.plugin.pytorch"):
        monkeypatch.setitem(sys.modules, mod, None)  # `import nvidia.dali` raises ImportError
    monkeypatch.setattr(factory, "_fallback_said", False)
    with caplog.at_level(logging.INFO, logger="lsdc.loaders"):
        loaders = [create_loader(_cfg("auto"), store, SAG_T2, None, train=False) for _ in range(3)]
    assert [ld.backend for ld in loaders] == ["torch"] * 3
    for ld in loaders:
        ld.close()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "torch loader" in warned[0] and "lsdc[dali-cu12]" in warned[0], warned
    with pytest.raises(InputError, match="dali-cu13"):
        create_loader(_cfg("dali"), store, SAG_T2, None, train=False)


def test_eval_loader_keeps_row_order_without_augmentation(synth_store):
    _, store = synth_store
    rows = np.array([5, 1, 3, 0])
    loader = create_loader(_cfg("torch"), store, SAG_T2, rows, train=False)
    batches = _epoch(loader)
    np.testing.assert_array_equal(_cat(batches, "row").numpy(), rows)
    reader = StoreReader(store, SAG_T2)
    m = (CropSpec().store_px - CropSpec().out_px) // 2
    grey = reader.read(rows)[:, 2:9, m:m + 128, m:m + 128] / 255
    back = _cat(batches, "image")[:, :, 0] * 0.229 + 0.485
    torch.testing.assert_close(back, torch.from_numpy(grey).float(), atol=1e-5, rtol=0)


def test_bench_loader_rows(synth_store, tmp_path):
    import json

    from lsdc.core.cli import main
    data, store = synth_store
    out = tmp_path / "bench.json"
    rc = main(["bench", "loader", "--store", str(store), "--data", str(data), "--backend", "torch", "dicom",
               "--repeats", "1", "--min-samples", "8", "--dicom-samples", "4", "--workers", "0", "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())
    assert {r["backend"] for r in rows} == {"decode", "store", "zarr", "torch", "dicom"}
    assert all({"backend", "augment", "workers", "samples_per_s"} <= set(r) for r in rows)
    assert all(r["samples_per_s"] > 0 for r in rows)


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_empty_row_set_gives_an_empty_epoch(synth_store, backend):
    if backend == "dali":
        _needs_dali()
    _, store = synth_store
    loader = create_loader(_cfg(backend), store, SAG_T2, np.array([], np.int64), train=True)
    assert len(loader) == 0 and _epoch(loader) == []


def test_balanced_loader_draws_labelled_rows_with_replacement(synth_store):
    _, store = synth_store
    index = read_index(store, SAG_T1)
    loader = create_loader(_cfg("torch", balanced=True), store, SAG_T1, None, train=True)
    rows = _cat(_epoch(loader), "row").numpy()
    assert len(rows) == len(index) == loader.num_samples
    assert (index["label"].to_numpy()[rows] >= 0).all()
    assert len(np.unique(rows)) < len(rows)  # with replacement


@pytest.mark.parametrize("k, weights", [(2, (0.70, 0.28, 0.02)), (2, ()), (1, (0.70, 0.28, 0.02)), (2, (0, 1))])
def test_slice_shifts_follow_the_weights_of_their_size(k, weights):
    """|shift| = j drawn with weight weights[j] (each sign half of it; weights past max_slice_shift
    dropped, missing ones 0), uniform without weights: frequencies of 40,000 draws against the
    distribution, within 4 binomial sds."""
    lcfg = LoaderConfig(max_slice_shift=k, slice_shift_probs=weights)
    want = np.ones(2 * k + 1) if not weights else np.array(
        [(weights[abs(s)] if abs(s) < len(weights) else 0) / (1 if s == 0 else 2) for s in range(-k, k + 1)])
    want = want / want.sum()
    np.testing.assert_allclose(shift_distribution(lcfg), want)
    n = 40_000
    got = np.bincount(draw_params(np.random.default_rng(1), lcfg, CropSpec(), n)["shift"] + k, minlength=2 * k + 1) / n
    assert len(got) == 2 * k + 1
    assert (np.abs(got - want) <= 4 * np.sqrt(want * (1 - want) / n) + 1e-12).all()


def test_slice_shift_weights_must_leave_a_shift_to_draw():
    with pytest.raises(InputError, match="slice_shift_probs"):
        LoaderConfig(max_slice_shift=1, slice_shift_probs=(0, 0, 1))
    with pytest.raises(InputError, match="slice_shift_probs"):
        LoaderConfig(slice_shift_probs=(1, -0.1))
