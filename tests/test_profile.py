"""`lsdc profile` runs the real training step on the real loader and splits data wait from compute;
`lsdc bench step` times the same step on in-memory batches. Both on conftest's ``train_store`` (24 studies,
out_px 64), the trainer's store. On a CPU host `lsdc profile` prints no kineto noise (no ERROR line)."""
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import TINY

from lsdc.benchmarks.profile import is_kineto_noise, kineto_noise_filtered
from lsdc.core.cli import main
from lsdc.core.overrides import load_config

LSDC = Path(sys.executable).with_name("lsdc")
PROFILE_ARGS = ["--view", "sagittal_t2", "--backend", "torch", "--steps", "3", "--warmup", "1", "--trace-steps", "2",
                *[a for a in TINY if not a.startswith("--loader.backend")]]
#: what kineto writes on a CPU host (torch 2.14's CUDA build) when a profile starts and stops
PROBE_START = b"USDT:2026-12-04 03:12:55 4455:4455 SyncActivityProfilerHandler.cpp:39] profiler_start\n"
NO_GPU = b"ERROR:2026-12-04 03:12:55 4455:4455 DeviceProperties.cpp:56] gpuGetDeviceCount failed with code 35\n"


def test_profile_reports_data_wait_and_writes_a_trace(train_store, tmp_path, capsys):
    rc = main(["profile", str(train_store), *PROFILE_ARGS, "--out", str(tmp_path / "prof"),
               "--json", str(tmp_path / "p.json")])
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


def test_profile_command_prints_no_error_line(train_store, tmp_path):
    """A fresh process (kineto reads its settings once per process), its output as a log would hold it."""
    r = subprocess.run([str(LSDC), "profile", str(train_store), *PROFILE_ARGS, "--out", str(tmp_path / "prof")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "data wait %" in r.stdout and (tmp_path / "prof" / "trace.json").is_file()
    lines = (r.stdout + r.stderr).splitlines()
    assert [ln for ln in lines if "ERROR" in ln or ln.startswith("USDT:")] == []


def test_the_kineto_filter_keeps_every_other_line(capfd):
    real = b"ERROR: a real kineto error\n"
    with kineto_noise_filtered():
        os.write(2, PROBE_START + NO_GPU + real)
        print("a warning of ours", file=sys.stderr)
    err = capfd.readouterr().err.splitlines()
    assert sorted(err) == sorted([real.decode().strip(), "a warning of ours"])


def test_the_missing_gpu_line_is_noise_only_where_torch_sees_no_gpu():
    assert is_kineto_noise(PROBE_START, cuda_available=True) and is_kineto_noise(PROBE_START, cuda_available=False)
    assert is_kineto_noise(NO_GPU, cuda_available=False)
    assert not is_kineto_noise(NO_GPU, cuda_available=True)  # with a GPU it would be a real failure
    assert not is_kineto_noise(b"ERROR:2026-12-04 03:12:55 1:1 X.cpp:1] gpuGetDeviceProperties failed with 3\n",
                               cuda_available=False)
