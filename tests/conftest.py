"""Shared fixtures: one session-wide factory of synthetic datasets and stores (``synth_factory``), and the
datasets, stores and short runs that several test modules share through it.

Every synthetic dataset and store the tests read is built by ``synth_factory`` at most once per session,
under one folder of the session's base temp directory, cached by its arguments: two modules asking for the
same one share a single build. A test that changes files copies first (``synth_factory.copy``).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from lsdc.synth.series import Variety

#: the localiser / predict / show dataset: 30 train + 4 test studies, 32 px crops, 64 px volumes
STUDIES, TEST_STUDIES, SEED = 30, 4, 11
PX32 = ("--preprocess.sagittal_t2.out_px=32", "--preprocess.sagittal_t1.out_px=32",
        "--preprocess.axial_t2.out_px=32", "--volume_px=64")
#: the trainer's dataset (tests/test_train_run.py, tests/test_profile.py): 24 studies, clean labels (seed 3
#: gives a spinal label mix of about 74 / 29 / 11 samples), crops at out_px 64
TRAIN_STUDIES, TRAIN_SEED = 24, 3
PX64 = ("--preprocess.sagittal_t2.out_px=64", "--preprocess.sagittal_t1.out_px=64", "--preprocess.axial_t2.out_px=64")
#: the small set: a few real files for the loaders and the convert benchmark
SMALL_STUDIES, SMALL_SEED = 3, 1
#: every series quirk forced on (thickness tags: half the series), no missing series: 3 + 1 studies, seed 3
#: (tests/test_synth_quirks.py reads the files back, tests/test_stacks.py converts them)
QUIRKY_STUDIES, QUIRKY_TEST_STUDIES, QUIRKY_SEED = 3, 1, 3
QUIRKY = Variety(two_axial=0.5, missing_series=0.0, angled_slabs=1.0, odd_slices=1.0, repeated_position=1.0,
                 repeated_sagittal=1.0, no_thickness_tags=0.5, jpeg2000=0.0)
#: a tiny from-scratch model for the mechanics of training (not for learning)
TINY = ["--backbone=test_resnet", "--proj_dim=16", "--gru_hidden=8", "--gru_layers=1", "--attn_dim=8",
        "--level_emb_dim=4", "--batch_size=8", "--loader.backend=torch", "--loader.workers=0", "--folds=3"]


def _digest(*parts) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:10]


class SynthFactory:
    """Synthetic datasets (``lsdc.synth.generate.synth``) and their stores (``lsdc.preprocess.convert.preprocess``),
    each built once per session and cached by its arguments. Returned paths are shared: read them, never
    change them (``copy`` them first)."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self._summaries: dict[Path, dict] = {}
        self._stores: set[Path] = set()

    def dataset(self, studies: int, seed: int, test_studies: int = 0, labels: str = "realistic", *,
                workers: int = 2, **synth_kwargs) -> Path:
        """The data folder ``synth(studies, seed, test_studies, label_model=labels, **synth_kwargs)`` writes
        (e.g. ``variety=Variety(...)``). ``workers`` is not part of the key: synth writes the same bytes
        whatever the number of workers."""
        from lsdc.synth.generate import synth
        tail = f"_{_digest(sorted(synth_kwargs.items()))}" if synth_kwargs else ""
        path = self.base / f"data_n{studies}_t{test_studies}_s{seed}_{labels}{tail}"
        if path not in self._summaries:
            shutil.rmtree(path, ignore_errors=True)  # what a failed build left
            try:
                self._summaries[path] = synth(path, studies, seed, test_studies, workers=workers, label_model=labels,
                                              **synth_kwargs)
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)
                raise
        return path

    def summary(self, data: Path) -> dict:
        """What ``synth`` returned when it wrote ``data`` (a path from :meth:`dataset`)."""
        return self._summaries[Path(data)]

    def store(self, data: Path, overrides=(), split: str = "train", coords: Path | None = None, *,
              workers: int = 2) -> Path:
        """The store ``preprocess(data, ..., split, coords, cfg=load_config(None, overrides))`` writes, for a
        data folder from :meth:`dataset`. ``workers`` is not part of the key (the store is the same)."""
        from lsdc.core.overrides import load_config
        from lsdc.preprocess.convert import preprocess
        data = Path(data)
        path = self.base / f"{data.name}__store_{split}_{_digest(str(data), tuple(overrides), split, str(coords))}"
        if path not in self._stores:
            shutil.rmtree(path, ignore_errors=True)
            try:
                preprocess(data, path, split, coords, workers, None, load_config(None, list(overrides)), progress=False)
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)
                raise
            self._stores.add(path)
        return path

    @staticmethod
    def report(store: Path) -> dict:
        """The conversion report of a store (what ``preprocess`` returned when it wrote it)."""
        from lsdc.store.layout import REPORT_FILE
        return json.loads((Path(store) / REPORT_FILE).read_text())

    @staticmethod
    def copy(src: Path, dst: Path) -> Path:
        """A private copy of a shared dataset or store, for a test that changes files."""
        shutil.copytree(src, dst)
        return Path(dst)


@pytest.fixture(scope="session")
def synth_factory(tmp_path_factory) -> SynthFactory:
    return SynthFactory(tmp_path_factory.getbasetemp() / "synth")


# -- datasets and runs shared by several modules ----------------------------------------------------
@pytest.fixture(scope="session")
def small_dataset(synth_factory) -> Path:
    """3 synthetic train studies (seed 1, realistic labels): tests/test_loaders.py's store is made from it,
    tests/test_convert_bench_damaged.py damages a copy."""
    return synth_factory.dataset(SMALL_STUDIES, SMALL_SEED)


@pytest.fixture(scope="session")
def quirky_dataset(synth_factory) -> Path:
    """The QUIRKY set, written with one worker (tests/test_synth_quirks.py re-writes it with two and compares)."""
    return synth_factory.dataset(QUIRKY_STUDIES, QUIRKY_SEED, QUIRKY_TEST_STUDIES, variety=QUIRKY, workers=1)


@pytest.fixture(scope="session")
def loc_dataset(synth_factory) -> tuple[Path, Path]:
    """(data dir, train store) of the localiser / predict / show dataset (30 + 4 studies, seed 11,
    32 px crops, 64 px volumes)."""
    data = synth_factory.dataset(STUDIES, SEED, TEST_STUDIES)
    return data, synth_factory.store(data, PX32)


@pytest.fixture(scope="session")
def short_localizer(loc_dataset, tmp_path_factory) -> Path:
    """A 2-epoch localiser (width 8, one model) trained on ``loc_dataset``'s store: what predict and show
    need to run the localiser end to end, not a test of its accuracy."""
    from lsdc.core.overrides import load_config
    from lsdc.localizer.train import train_localizer
    out = tmp_path_factory.mktemp("localizer_short")
    train_localizer(loc_dataset[1], out, load_config(None, ["--loc_epochs=2", "--loc_width=8", "--loc_ensemble=1"]),
                    progress=False)
    return out


@pytest.fixture(scope="session")
def train_store(synth_factory) -> Path:
    """The trainer's store: 24 studies (seed 3, clean labels), crops at out_px 64."""
    return synth_factory.store(synth_factory.dataset(TRAIN_STUDIES, TRAIN_SEED, labels="clean"), PX64)
