"""Shared fixtures: the synthetic dataset + train store used by the localiser and predict tests."""
from pathlib import Path

from lsdc.core.config import load_config

STUDIES, TEST_STUDIES, SEED = 30, 4, 11


def build_dataset(base: Path) -> tuple[Path, Path]:
    """(data dir, train store) of the synthetic dataset shared by the localiser and predict tests
    (30 + 4 studies, 32 px crops, 64 px volumes), built once per session folder."""
    from lsdc.preprocess.convert import preprocess
    from lsdc.synth.generate import synth
    data, store = base / "data", base / "store"
    if not (store / "zarr.json").is_file():
        if not (data / "train.csv").is_file():
            synth(data, STUDIES, SEED, test_studies=TEST_STUDIES, workers=2)
        cfg = load_config(None, ["--preprocess.sagittal_t2.out_px=32", "--preprocess.sagittal_t1.out_px=32",
                                 "--preprocess.axial_t2.out_px=32", "--volume_px=64"])
        preprocess(data, store, "train", None, 2, None, cfg, progress=False)
    return data, store
