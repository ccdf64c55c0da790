"""`lsdc profile` runs the real training step on the real loader and splits data wait from compute;
`lsdc bench step` times the same step on in-memory batches. Both on conftest's ``train_store`` (24 studies,
out_px 64), the trainer's store."""
import json

from conftest import TINY

from lsdc.core.cli import main
from lsdc.core.overrides import load_config


def test_profile_reports_data_wait_and_writes_a_trace(train_store, tmp_path, capsys):
    rc = main(["profile", str(train_store), "--view", "sagittal_t2", "--backend", "torch", "--steps", "3",
               "--warmup", "1", "--trace-steps", "2", "--out", str(tmp_path / "prof"), "--json", str(tmp_path / "p.json"),
               *[a for a in TINY if not a.startswith("--loader.backend")]])
    assert rc == 0
    res = json.loads((tmp_path / "p.json").read_text())
    for key in ("data_wait_share", "data_s_per_step", "compute_s_per_step", "samples_per_s", "backend", "device"):
        assert key in res, key
    assert res["backend"] == "torch" and res["device"] == "cpu"
    assert 0 <= res["data_wait_share"] <= 1 and res["compute_s_per_step"] > 0
    trace = json.loads((tmp_path / "prof" / "trace.json").read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"data_wait", "train_step"} <= names
    assert "data wait %" in capsys.readouterr().out


def test_bench_step_takes_the_shape_from_the_store(train_store, tmp_path):
    rc = main(["bench", "step", "--store", str(train_store), "--view", "axial_t2", "--steps", "2", "--warmup", "1",
               "--json", str(tmp_path / "b.json"), *TINY])
    assert rc == 0
    res = json.loads((tmp_path / "b.json").read_text())
    spec = load_config(None).preprocess.axial_t2
    assert res["shape"] == [8, spec.slices, 3, 64, 64]  # out_px 64 is the store's, not the default 128
    assert res["samples_per_s"] > 0
