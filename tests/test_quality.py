"""`lsdc bench quality`: datasets from the reserved seed range, the figures recomputable from the files
it leaves, the pairwise deltas seed by seed, and its caches (a second recipe costs only training).

Tiny on purpose (5 train / 2 test studies, two steps of one epoch): this checks the yardstick's
bookkeeping, not a model's quality (benchmarks/RESULTS.md has those figures)."""
import json
import statistics

import numpy as np
import pandas as pd
import pytest

from lsdc.benchmarks import quality as q
from lsdc.core.cli import main
from lsdc.core.errors import InputError
from lsdc.core.schema import SUBMISSION_COLUMNS
from lsdc.demo.pipeline import DEMO_SEED
from lsdc.metric.baselines import score_report

SMOKE = "--folds=2 --epochs=1 --max_steps_per_epoch=2 --loader.backend=torch"
N, M = 5, 2


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    out = tmp_path_factory.mktemp("quality")
    rc = main(["bench", "quality", "--out", str(out), "--seeds", "2", "--train", str(N), "--test", str(M),
               "--workers", "2", "--recipe", f"a={SMOKE}"])
    assert rc == 0
    return out, json.loads((out / "quality.json").read_text())


def test_the_datasets_come_from_the_reserved_seed_range(first):
    _, res = first
    seeds = res["options"]["seeds"]
    assert seeds == [q.QUALITY_SEED_BASE, q.QUALITY_SEED_BASE + 1] and DEMO_SEED not in seeds
    assert min(seeds) >= q.QUALITY_SEED_BASE > 100


def test_every_figure_is_the_score_of_the_submission_it_left(first):
    out, res = first
    a = res["recipes"]["a"]
    for seed, r in a["per_seed"].items():
        data = out / "datasets" / q.dataset_name(int(seed), N, M) / "data"
        run = out / "recipes" / f"a_{a['key']}" / q.dataset_name(int(seed), N, M) / "fold0"
        for variant in ("raw", "calibrated"):
            sub = run / f"submission_true_{variant}.csv"
            frame = pd.read_csv(sub)
            assert len(frame) == 25 * M and np.allclose(frame[list(SUBMISSION_COLUMNS)].sum(axis=1), 1)
            again = score_report(data / "test_labels.csv", sub, prior_from=data / "train.csv",
                                 oracle=data / "test_oracle.csv")
            assert again["score"] == pytest.approx(r["true"][variant]["score"])
            assert again["skill"] == pytest.approx(r["true"][variant]["skill"])
        raw, cal = (pd.read_csv(run / f"submission_true_{v}.csv") for v in ("raw", "calibrated"))
        assert not np.allclose(raw[list(SUBMISSION_COLUMNS)], cal[list(SUBMISSION_COLUMNS)])  # calibration ran
    skills = [r["true"]["calibrated"]["skill"] for r in a["per_seed"].values()]
    s = a["summary"]["true"]["calibrated"]["overall"]
    assert s["mean"] == pytest.approx(statistics.fmean(skills)) and s["sd"] == pytest.approx(statistics.stdev(skills))
    assert s["min"] == pytest.approx(min(skills)) and s["n"] == 2


def test_a_second_recipe_costs_only_training_and_is_compared_seed_by_seed(first, capsys):
    out, res = first
    data = sorted((out / "datasets").glob("*/data"))
    stamps = {p: p.stat().st_mtime_ns for d in data for p in [d / q.COMPLETE, *d.parent.glob("*store_*/.complete")]}
    result_a = sorted((out / "recipes").glob("a_*/*/fold0/result.json"))
    before = {p: p.read_bytes() for p in result_a}
    rc = main(["bench", "quality", "--out", str(out), "--seeds", "2", "--train", str(N), "--test", str(M),
               "--workers", "2", "--views", "sagittal_t1", "--recipe", f"a={SMOKE}", "--recipe", f"b={SMOKE} --augment=true"])
    assert rc == 0
    assert "b - a" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing synthesised or converted again
    assert len(result_a) == 2 and {p: p.read_bytes() for p in result_a} == before  # a's full result untouched
    for recipe in ("a", "b"):
        run = next((out / "recipes").glob(f"{recipe}_*")) / q.dataset_name(q.QUALITY_SEED_BASE, N, M) / "fold0"
        sub = pd.read_csv(run / "submission_true_raw_sagittal_t1.csv")
        spinal = sub[sub.row_id.str.contains("spinal")]
        per_level = spinal.groupby(spinal.row_id.str[-5:])[list(SUBMISSION_COLUMNS)].nunique()
        assert (per_level == 1).all().all()  # an untrained view's cells: the prior, alike in every study
    assert sorted(p.name for p in (run / "runs").iterdir()) == ["sagittal_t1"]  # b trained Sagittal T1 only
    both = json.loads((out / "quality.json").read_text())
    (p,) = both["pairs"]
    assert (p["a"], p["b"]) == ("a", "b")
    delta = [both["recipes"]["b"]["per_seed"][s]["true"]["raw"]["score"] - both["recipes"]["a"]["per_seed"][s]["true"]["raw"]["score"]
             for s in both["recipes"]["a"]["per_seed"]]
    d = p["delta_b_minus_a"]["true"]["raw"]["score"]
    assert d["mean"] == pytest.approx(statistics.fmean(delta)) and d["sd"] == pytest.approx(statistics.stdev(delta))
    assert both["recipes"]["b"]["key"] != both["recipes"]["a"]["key"]


def test_recipes_name_what_is_wrong_with_them(tmp_path, capsys):
    with pytest.raises(InputError, match="neither a config file"):
        q.parse_recipe("x=nope.yaml")
    with pytest.raises(InputError, match="the name"):
        q.parse_recipe("bad name=--epochs=1")
    with pytest.raises(InputError, match="epochs"):
        q.parse_recipe("x=--epochs=0")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: 3\n")
    assert q.parse_recipe(f"y={cfg}").cfg.train.epochs == 3
    assert q.parse_recipe("z=--epochs=2").cfg.model.backbone == "test_convnext"  # on top of the demo's
    assert q.parse_recipe("z=--epochs=2", base="defaults").cfg.model.backbone != "test_convnext"
    assert main(["bench", "quality", "--out", str(tmp_path / "o"), "--recipe", "a", "--recipe", "a"]) == 2
    assert "differ" in capsys.readouterr().err
