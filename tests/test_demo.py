"""`lsdc demo` end to end at smoke scale: every stage runs, every artefact is written, and the
summary's numbers are the ones in the files (the demo itself is the user's first command)."""
import json

import numpy as np
import pandas as pd
import pytest

from lsdc.core.cli import main


def test_demo_smoke_writes_every_artefact_and_the_gap(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--studies", "10", "--test-studies", "2", "--workers", "2",
               "--epochs=2", "--max_steps_per_epoch=2", "--loc_epochs=1", "--loc_ensemble=1",
               # the benchmark stages at their smallest
               "--bench-repeats", "1", "--bench-min-samples", "1", "--bench-dicom-samples", "1",
               "--bench-steps", "1", "--bench-warmup", "0", "--bench-trace-steps", "1"])
    assert rc == 0
    for name in ("submission.csv", "submission_true_coords.csv", "score.json", "score_true_coords.json",
                 "localizer.json", "summary.json", "config.yaml", "bench_loader.json", "profile.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "profile.json").read_text())["steps"] == 1
    assert json.loads((out / "bench_step.json").read_text())["steps"] == 1
    sub = pd.read_csv(out / "submission.csv")
    assert len(sub) == 2 * 25 and not sub.isna().any().any()
    np.testing.assert_allclose(sub[["normal_mild", "moderate", "severe"]].sum(axis=1), 1.0, atol=1e-6)
    scored = json.loads((out / "score.json").read_text())
    score = scored["score"]
    assert isinstance(scored["prior"], float) and isinstance(scored["ceiling"], float)  # the yardstick
    assert scored["skill"] is None or isinstance(scored["skill"], float)
    assert set(scored["terms"]) == {"spinal", "foraminal", "subarticular", "any_severe"}
    true_score = json.loads((out / "score_true_coords.json").read_text())["score"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["score (test)"]["score"] == pytest.approx(score, abs=1e-4)
    assert summary["predict (true coords)"]["gap (predicted - true coords)"] == pytest.approx(score - true_score, abs=1e-4)
    loc = json.loads((out / "localizer.json").read_text())
    assert loc["median_error_mm"] >= 0 and 0 <= loc["slice_exact"] <= 1
    printed = capsys.readouterr().out
    assert "gap (predicted - true coords)" in printed and str(out / "submission.csv") in printed
    for term in ("spinal", "foraminal", "subarticular", "any_severe", "overall"):
        assert f"{term}: prior / model / ceiling / skill" in printed
