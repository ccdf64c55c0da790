"""Scores against the prior (best constant) and the ceiling (oracle): the closed form, skill, `lsdc score` flags."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from lsdc.core.cli import main
from lsdc.core.errors import InputError
from lsdc.core.readers import read_sample_submission, read_train
from lsdc.core.schema import (BLANK, CONDITIONS, GROUPS, LABEL_COLUMNS, LEVELS, SEVERITY_WEIGHTS, SPINAL,
                              SUBMISSION_COLUMNS, label_column, row_id)
from lsdc.metric.baselines import (CELLS, PRIOR_PSEUDOCOUNT, best_constant, class_counts, fit_prior, fold_priors,
                                   prior_predictions, prior_submission, report_frames, score_prior, score_report, skill,
                                   weighted_optimum, zero_probability_rows)
from lsdc.metric.cli import format_table
from lsdc.metric.official import TERMS, score_files, score_frames, weighted_log_loss

W = np.asarray(SEVERITY_WEIGHTS)
OLD_KEYS = ["score", "spinal", "foraminal", "subarticular", "any_severe"]


def write_train_csv(labels: pd.DataFrame, path) -> None:
    from lsdc.core.schema import SEVERITIES
    text = labels.copy()
    for c in LABEL_COLUMNS:
        text[c] = [SEVERITIES[v] if v != BLANK else "" for v in labels[c]]
    text.to_csv(path, index=False)


def random_labels(rng, n_studies, p=(0.05, 0.6, 0.22, 0.13), first_id=1) -> pd.DataFrame:
    codes = rng.choice([BLANK, 0, 1, 2], p=list(p), size=(n_studies, len(LABEL_COLUMNS)))
    labels = pd.DataFrame(codes, columns=list(LABEL_COLUMNS))
    labels.insert(0, "study_id", np.arange(first_id, first_id + n_studies))
    return labels


def cell_loss(counts, p) -> float:
    """Weighted log loss of a constant p on rows with class counts ``counts``, via the official code."""
    y = np.repeat(np.arange(3), counts)
    return weighted_log_loss(y, np.tile(p, (len(y), 1)), W[y])


def synthetic_split(tmp_path, seed=0, n_train=400, n_test=300):
    """A train.csv and a test split drawn from known per-cell posteriors, with the oracle file."""
    rng = np.random.default_rng(seed)
    base = rng.dirichlet([4, 1.5, 1], size=len(CELLS))  # cell-level mix
    def draw(n, first_id):
        # per-row posterior: the cell mix sharpened or blurred per study (the oracle knows it)
        post = np.stack([rng.dirichlet(base[j] * 3 + 0.05, size=n) for j in range(len(CELLS))], axis=1)
        u = rng.random((n, len(CELLS), 1))
        codes = (u > np.cumsum(post, axis=2)).sum(axis=2)
        labels = pd.DataFrame(codes, columns=list(LABEL_COLUMNS))
        labels.iloc[rng.random(labels.shape) < 0.02] = BLANK
        labels.insert(0, "study_id", np.arange(first_id, first_id + n))
        oracle = pd.DataFrame(post.reshape(-1, 3), columns=list(SUBMISSION_COLUMNS))
        oracle.insert(0, "row_id", [row_id(s, c, lv) for s in labels["study_id"] for c, lv in CELLS])
        return labels, oracle
    train, _ = draw(n_train, 1)
    test, oracle = draw(n_test, 10_000)
    write_train_csv(train, tmp_path / "train.csv")
    write_train_csv(test, tmp_path / "test_labels.csv")
    oracle.to_csv(tmp_path / "test_oracle.csv", index=False)
    prior_submission(fit_prior(train), test["study_id"]).to_csv(tmp_path / "prior_submission.csv", index=False)
    model = oracle.copy()  # a model between the two: the oracle blurred toward uniform
    model[list(SUBMISSION_COLUMNS)] = 0.7 * model[list(SUBMISSION_COLUMNS)].to_numpy() + 0.1
    model.to_csv(tmp_path / "submission.csv", index=False)
    return train, test


# --- the closed form ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_closed_form_beats_scipy_and_grid(seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 60, size=3)
    counts[rng.integers(3)] += 1  # at least one label
    p = best_constant(counts, 0.0)
    assert p.sum() == pytest.approx(1) and np.allclose(p, W * counts / (W * counts).sum())
    best = cell_loss(counts, p)
    # Gibbs: the minimum is the entropy of the weighted frequencies
    q = p[p > 0]
    assert best == pytest.approx(-(q * np.log(q)).sum(), rel=1e-9)
    res = minimize(lambda z: cell_loss(counts, np.exp(z - z.max()) / np.exp(z - z.max()).sum()),
                   rng.normal(size=3), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})
    assert best <= res.fun + 1e-9
    axis = np.linspace(0.005, 0.995, 100)
    grid = [(a, b, 1 - a - b) for a in axis for b in axis if a + b < 0.999]
    assert best <= min(cell_loss(counts, np.asarray(g)) for g in grid) + 1e-12


@pytest.mark.parametrize("seed", range(3))
def test_fitted_prior_is_the_best_constant_per_cell_for_each_group_term(seed):
    rng = np.random.default_rng(seed)
    labels = random_labels(rng, 30)
    prior = fit_prior(labels, pseudocount=0.0)  # the exact in-sample optimum
    base = score_prior(labels, prior)
    for trial in range(20):  # any other constants (all cells at once) score no better on any group term
        other = prior.copy()
        other[list(SUBMISSION_COLUMNS)] = rng.dirichlet([1, 1, 1], size=len(other))
        worse = score_prior(labels, other)
        for g in GROUPS:
            assert base[g] <= worse[g] + 1e-12
    for j in rng.choice(len(CELLS), 4, replace=False):  # and a local perturbation of one cell
        for eps in (1e-3, -1e-3):
            other = prior.copy()
            p = other.loc[j, list(SUBMISSION_COLUMNS)].to_numpy(float) + eps * np.array([1.0, -0.5, -0.5])
            other.loc[j, list(SUBMISSION_COLUMNS)] = p
            g = next(g for g, cs in GROUPS.items() if CELLS[j][0] in cs)
            assert base[g] <= score_prior(labels, other)[g] + 1e-15


MIXES = {"spinal": ((0.878, 0.075, 0.048), 0.78), "foraminal": ((0.780, 0.181, 0.040), 0.92),
         "subarticular": ((0.714, 0.190, 0.096), 1.05)}


def test_real_label_mix_reproduces_published_constant_scores():
    n = 2000
    group_of = {c: g for g, cs in GROUPS.items() for c in cs}
    cols = {}
    for c, lv in CELLS:
        mix = np.asarray(MIXES[group_of[c]][0])
        k = np.round(mix / mix.sum() * n).astype(int)
        cols[label_column(c, lv)] = np.repeat(np.arange(3), k)[:n]
    labels = pd.DataFrame({"study_id": np.arange(n), **{c: cols[c] for c in LABEL_COLUMNS}})
    res = score_prior(labels, fit_prior(labels, pseudocount=0.0))
    for g, (mix, expected) in MIXES.items():
        assert res[g] == pytest.approx(expected, abs=0.02), g
        q = W * np.asarray(mix) / (W * np.asarray(mix)).sum()
        assert res[g] == pytest.approx(-(q * np.log(q)).sum(), abs=2e-3)  # = entropy of the weighted mix


def test_fallbacks_and_pseudocount():
    labels = random_labels(np.random.default_rng(1), 20, p=(0.0, 0.6, 0.25, 0.15))
    empty_cell = label_column(SPINAL, "l1_l2")
    labels[empty_cell] = BLANK
    for lv in LEVELS:
        labels[label_column(CONDITIONS[4], lv)] = BLANK
    prior = fit_prior(labels).set_index(["condition", "level"])
    pooled = class_counts(labels)[[CELLS.index((SPINAL, lv)) for lv in LEVELS]].sum(axis=0)
    assert prior.loc[(SPINAL, "l1_l2"), "source"] == "condition"
    assert np.allclose(prior.loc[(SPINAL, "l1_l2"), list(SUBMISSION_COLUMNS)].to_numpy(float),
                       best_constant(pooled, PRIOR_PSEUDOCOUNT))
    assert (prior.loc[CONDITIONS[4], "source"] == "uniform").all()
    assert np.allclose(prior.loc[CONDITIONS[4], list(SUBMISSION_COLUMNS)].to_numpy(float), 1 / 3)
    assert (prior.loc[CONDITIONS[1], "source"] == "cell").all()
    assert prior.loc[(SPINAL, "l2_l3"), "labelled"] == 20
    # pseudocount: p_k proportional to w_k (n_k + a), a = 0.5 by default; a class never seen gets no 0
    one_class = random_labels(np.random.default_rng(2), 10, p=(0, 1, 0, 0))
    assert fit_prior(one_class, pseudocount=0.0)["severe"].eq(0).all()
    assert PRIOR_PSEUDOCOUNT == 0.5
    smooth = fit_prior(one_class)
    expected = W * [10.5, 0.5, 0.5] / (W * [10.5, 0.5, 0.5]).sum()
    assert np.allclose(smooth.loc[0, list(SUBMISSION_COLUMNS)].to_numpy(float), expected)
    pd.testing.assert_frame_equal(fit_prior(one_class, pseudocount=0.5), smooth)
    with pytest.raises(ValueError):
        fit_prior(one_class, pseudocount=-1)


def test_long_form_counts_each_cell_once():
    labels = random_labels(np.random.default_rng(3), 15)
    long = labels.melt(id_vars="study_id", var_name="column", value_name="label")
    cell = {label_column(c, lv): (c, lv) for c, lv in CELLS}
    long["condition"] = [cell[c][0] for c in long["column"]]
    long["level"] = [cell[c][1] for c in long["column"]]
    doubled = pd.concat([long, long[long["condition"] == CONDITIONS[3]]])  # a cell seen by two series
    assert (class_counts(doubled) == class_counts(labels)).all()
    pd.testing.assert_frame_equal(fit_prior(doubled), fit_prior(labels))
    with pytest.raises(ValueError):
        class_counts(labels[["study_id"]])


def test_prior_submission_shape():
    prior = fit_prior(random_labels(np.random.default_rng(4), 10))
    sub = prior_submission(prior, [7, 3, 7])
    assert list(sub.columns) == ["row_id", *SUBMISSION_COLUMNS] and len(sub) == 50
    assert list(sub["row_id"]) == sorted(sub["row_id"])
    np.testing.assert_allclose(sub[list(SUBMISSION_COLUMNS)].sum(axis=1), 1.0)


# --- skill ---------------------------------------------------------------------------------------
def test_skill_guards():
    assert skill(0.5, 1.0, 0.0) == pytest.approx(0.5)
    assert skill(1.2, 1.0, 0.5) == pytest.approx(-0.4)
    assert skill(0.5, 1.0, None) is None and skill(0.5, None, 0.2) is None
    assert skill(0.5, 0.7, 0.7) is None
    assert skill(0.5, 0.7, 0.9) is None  # a "ceiling" worse than the prior
    assert skill(float("nan"), 1.0, 0.5) is None


def test_skill_is_0_for_the_prior_and_1_for_the_oracle(tmp_path):
    synthetic_split(tmp_path)
    kw = dict(prior_from=tmp_path / "train.csv", oracle=tmp_path / "test_oracle.csv")
    as_prior = score_report(tmp_path / "test_labels.csv", tmp_path / "prior_submission.csv", **kw)
    as_oracle = score_report(tmp_path / "test_labels.csv", tmp_path / "test_oracle.csv", **kw)
    model = score_report(tmp_path / "test_labels.csv", tmp_path / "submission.csv", **kw)
    assert as_prior["skill"] == pytest.approx(0, abs=1e-9) and as_oracle["skill"] == pytest.approx(1, abs=1e-12)
    for t in GROUPS:
        assert as_prior["terms"][t]["skill"] == pytest.approx(0, abs=1e-9)
        assert as_oracle["terms"][t]["skill"] == pytest.approx(1, abs=1e-12)
        assert model["terms"][t]["ceiling"] < model["terms"][t]["prior"]  # the oracle beats the prior
    # a raw posterior's max(severe) is no optimum of any_severe: here its "ceiling" is above the prior,
    # so that term has no skill
    assert model["terms"]["any_severe"]["ceiling"] > model["terms"]["any_severe"]["prior"]
    assert as_oracle["terms"]["any_severe"]["skill"] is None and model["terms"]["any_severe"]["skill"] is None
    assert 0 < model["skill"] < 1
    expected = (model["prior"] - model["score"]) / (model["prior"] - model["ceiling"])
    assert model["skill"] == pytest.approx(expected, rel=1e-12)
    assert model["prior"] == pytest.approx(np.mean([model["terms"][t]["prior"] for t in TERMS]), rel=1e-12)
    # the model fields are score_files' own
    old = score_files(tmp_path / "test_labels.csv", tmp_path / "submission.csv")
    assert {k: model[k] for k in OLD_KEYS} == old
    assert all(model["terms"][t]["model"] == old[t] for t in TERMS)


def test_tilted_oracle_is_a_lower_ceiling_and_scores_skill_1(tmp_path):
    synthetic_split(tmp_path)
    posterior = read_sample_submission(tmp_path / "test_oracle.csv")
    tilted = weighted_optimum(posterior)
    p = posterior[list(SUBMISSION_COLUMNS)].to_numpy() * W
    np.testing.assert_allclose(tilted[list(SUBMISSION_COLUMNS)].to_numpy(), p / p.sum(axis=1, keepdims=True))
    tilted[["row_id", *SUBMISSION_COLUMNS]].to_csv(tmp_path / "tilted.csv", index=False)
    kw = dict(prior_from=tmp_path / "train.csv", oracle=tmp_path / "test_oracle.csv")
    raw = score_report(tmp_path / "test_labels.csv", tmp_path / "submission.csv", **kw)
    tilt = score_report(tmp_path / "test_labels.csv", tmp_path / "submission.csv", tilt_oracle=True, **kw)
    as_oracle = score_report(tmp_path / "test_labels.csv", tmp_path / "tilted.csv", tilt_oracle=True, **kw)
    assert tilt["prior"] == raw["prior"] and tilt["score"] == raw["score"]
    for t in TERMS:  # the tilt lowers every term's ceiling, any_severe's below the prior here
        assert tilt["terms"][t]["ceiling"] < min(raw["terms"][t]["ceiling"], tilt["terms"][t]["prior"])
        assert as_oracle["terms"][t]["skill"] == pytest.approx(1, abs=1e-9)
    assert as_oracle["skill"] == pytest.approx(1, abs=1e-9)
    in_memory = report_frames(read_train(tmp_path / "test_labels.csv"),
                              read_sample_submission(tmp_path / "submission.csv"),
                              fit_prior(read_train(tmp_path / "train.csv")), posterior, tilt_oracle=True)
    assert in_memory == tilt
    # the tilted oracle beats the raw posterior as a submission too (the raw one's skill < 1)
    raw_as_model = score_report(tmp_path / "test_labels.csv", tmp_path / "test_oracle.csv", tilt_oracle=True, **kw)
    assert raw_as_model["skill"] < 0.8


def test_report_without_references_has_no_skill(tmp_path):
    synthetic_split(tmp_path, n_train=50, n_test=30)
    rep = score_report(tmp_path / "test_labels.csv", tmp_path / "submission.csv", prior_from=tmp_path / "train.csv")
    assert rep["ceiling"] is None and rep["skill"] is None and rep["prior"] is not None
    assert all(rep["terms"][t]["skill"] is None and rep["terms"][t]["ceiling"] is None for t in TERMS)


def test_training_loop_prior_matches_the_file_path():
    """The in-memory route (prediction rows -> prior rows -> view_score) scores as score_prior does."""
    from lsdc.train.report import view_score
    rng = np.random.default_rng(5)
    labels = random_labels(rng, 40)
    folds = np.arange(40) % 4
    rows = []
    for s, f in zip(labels["study_id"], folds):
        for c in GROUPS["foraminal"]:
            for lv in LEVELS:
                y = int(labels.loc[labels["study_id"] == s, label_column(c, lv)].iloc[0])
                rows.append((s, c, lv, y, 0.6, 0.3, 0.1, f))
    pred = pd.DataFrame(rows, columns=["study_id", "condition", "level", "label", "p0", "p1", "p2", "fold"])
    priors = fold_priors(labels, folds)
    assert sorted(priors) == [0, 1, 2, 3]
    got = view_score("sagittal_t1", prior_predictions(pred, priors))
    for k in range(4):  # fold k's rows get the prior of the other folds, scored as a submission would be
        mine = pred[pred["fold"] == k]
        one = view_score("sagittal_t1", prior_predictions(mine, priors[k]))
        ref = score_prior(labels[folds == k], fit_prior(labels[folds != k]))
        assert one["foraminal"] == pytest.approx(ref["foraminal"], rel=1e-12)
    total = score_frames(labels, pd.concat([prior_submission(priors[k], labels["study_id"][folds == k])
                                            for k in range(4)]))
    assert got["foraminal"] == pytest.approx(total["foraminal"], rel=1e-12)
    with pytest.raises(ValueError):
        prior_predictions(pred, {0: priors[0]})


# --- CLI ----------------------------------------------------------------------------------------
def old_format_table(result: dict) -> str:
    """`lsdc score`'s table before --prior-from/--oracle existed, verbatim."""
    lines = [f"{'term':<14}{'log loss':>10}"]
    lines += [f"{t:<14}{result[t]:>10.4f}" for t in TERMS]
    lines.append(f"{'score':<14}{result['score']:>10.4f}")
    return "\n".join(lines)


def test_cli_without_flags_is_unchanged(tmp_path, capsys):
    synthetic_split(tmp_path, n_train=40, n_test=20)
    args = ["score", str(tmp_path / "test_labels.csv"), str(tmp_path / "submission.csv")]
    old = score_files(tmp_path / "test_labels.csv", tmp_path / "submission.csv")
    assert main(args) == 0
    assert capsys.readouterr().out == old_format_table(old) + "\n"
    assert main(args + ["--json"]) == 0
    out = capsys.readouterr().out
    assert out == json.dumps(old) + "\n" and list(json.loads(out)) == OLD_KEYS


def test_cli_table_columns(tmp_path, capsys):
    synthetic_split(tmp_path, n_train=60, n_test=40)
    base = ["score", str(tmp_path / "test_labels.csv"), str(tmp_path / "submission.csv")]
    assert main(base + ["--prior-from", str(tmp_path / "train.csv")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["term", "log", "loss", "prior"] and len(lines) == 6
    assert main(base + ["--oracle", str(tmp_path / "test_oracle.csv")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["term", "log", "loss", "ceiling"] and len(lines) == 6
    both = ["--prior-from", str(tmp_path / "train.csv"), "--oracle", str(tmp_path / "test_oracle.csv")]
    assert main(base + both) == 0
    out = capsys.readouterr().out
    rep = score_report(tmp_path / "test_labels.csv", tmp_path / "submission.csv", tmp_path / "train.csv",
                       tmp_path / "test_oracle.csv")
    assert out == format_table(rep) + "\n"
    lines = out.splitlines()
    assert lines[0].split() == ["term", "log", "loss", "prior", "ceiling", "skill"]
    assert [ln.split()[0] for ln in lines[1:6]] == [*TERMS, "score"]
    assert float(lines[5].split()[4]) == pytest.approx(rep["skill"], abs=6e-5)
    assert lines[6].startswith("skill = ")


def test_cli_json_shape(tmp_path, capsys):
    synthetic_split(tmp_path, n_train=60, n_test=40)
    assert main(["score", str(tmp_path / "test_labels.csv"), str(tmp_path / "submission.csv"), "--json",
                 "--prior-from", str(tmp_path / "train.csv"), "--oracle", str(tmp_path / "test_oracle.csv")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == OLD_KEYS + ["prior", "ceiling", "skill", "terms"]
    assert list(out["terms"]) == list(TERMS)
    for t in TERMS:
        assert list(out["terms"][t]) == ["model", "prior", "ceiling", "skill"]
        assert out["terms"][t]["model"] == out[t]
        assert all(isinstance(v, float) for k, v in out["terms"][t].items() if k != "skill")
        assert out["terms"][t]["skill"] is None or isinstance(out["terms"][t]["skill"], float)
        if t in GROUPS:
            assert isinstance(out["terms"][t]["skill"], float)
    assert all(isinstance(out[k], float) for k in ("prior", "ceiling", "skill"))
    # only the prior asked for: the same keys, ceiling and skill null
    assert main(["score", str(tmp_path / "test_labels.csv"), str(tmp_path / "submission.csv"), "--json",
                 "--prior-from", str(tmp_path / "train.csv")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == OLD_KEYS + ["prior", "ceiling", "skill", "terms"]
    assert out["ceiling"] is None and out["skill"] is None and isinstance(out["prior"], float)


def _bad_oracle(d):
    o = pd.read_csv(d / "test_oracle.csv")
    o.drop(index=3).to_csv(d / "bad_oracle.csv", index=False)
    return ["--oracle", str(d / "bad_oracle.csv")], ["bad_oracle.csv", o.loc[3, "row_id"]]


def _wrong_columns(d):
    pd.read_csv(d / "train.csv").drop(columns=[LABEL_COLUMNS[7]]).to_csv(d / "wrong.csv", index=False)
    return ["--prior-from", str(d / "wrong.csv")], ["wrong.csv", LABEL_COLUMNS[7]]


def _bad_severity(d):
    t = pd.read_csv(d / "train.csv", dtype=str, keep_default_na=False)
    t.loc[4, LABEL_COLUMNS[2]] = "Sever"
    t.to_csv(d / "typo.csv", index=False)
    return ["--prior-from", str(d / "typo.csv")], ["typo.csv line 6", "Sever"]


@pytest.mark.parametrize("make", [
    lambda d: (["--prior-from", str(d / "nope.csv")], ["nope.csv", "not found"]),
    lambda d: (["--oracle", str(d / "gone.csv")], ["gone.csv", "not found"]),
    _bad_oracle, _wrong_columns, _bad_severity,
    lambda d: (["--prior-from", str(d / "train.csv"), "--prior-pseudocount", "-1"], ["pseudocount"]),
    lambda d: (["--prior-pseudocount", "0.5"], ["--prior-from"]),
    lambda d: (["--tilt-oracle"], ["--oracle"]),
    lambda d: (["--oracle", str(d / "nan_oracle.csv"), "--tilt-oracle"],
               ["nan_oracle.csv", row_id(10_000, SPINAL, "l1_l2")]),
], ids=["missing-prior", "missing-oracle", "oracle-lacks-row", "train-wrong-columns", "train-bad-value",
        "negative-pseudocount", "pseudocount-without-prior", "tilt-without-oracle", "tilted-oracle-bad-row"])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, make):
    synthetic_split(tmp_path, n_train=30, n_test=10)
    o = pd.read_csv(tmp_path / "test_oracle.csv")
    o.loc[o["row_id"] == row_id(10_000, SPINAL, "l1_l2"), "moderate"] = np.nan
    o.to_csv(tmp_path / "nan_oracle.csv", index=False)
    extra, expected = make(tmp_path)
    assert main(["score", str(tmp_path / "test_labels.csv"), str(tmp_path / "submission.csv"), *extra]) == 2
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lsdc score: error:") and cap.out == ""
    for text in expected:
        assert text in err[0]


def test_library_raises_input_error_for_bad_oracle(tmp_path):
    synthetic_split(tmp_path, n_train=30, n_test=10)
    extra, expected = _bad_oracle(tmp_path)
    with pytest.raises(InputError, match="bad_oracle.csv"):
        score_report(tmp_path / "test_labels.csv", tmp_path / "submission.csv", oracle=extra[1])


def test_zero_probability_note(tmp_path, capsys):
    rng = np.random.default_rng(6)
    train = random_labels(rng, 10, p=(0, 1, 0, 0))  # only Normal/Mild: every other class gets 0
    test = random_labels(rng, 5, p=(0, 0.5, 0.5, 0), first_id=100)
    write_train_csv(train, tmp_path / "train.csv")
    write_train_csv(test, tmp_path / "test.csv")
    prior_submission(fit_prior(train), test["study_id"]).to_csv(tmp_path / "sub.csv", index=False)
    n = zero_probability_rows(fit_prior(train, pseudocount=0.0), test)
    assert n == int((test[list(LABEL_COLUMNS)] == 1).to_numpy().sum()) > 0
    assert zero_probability_rows(fit_prior(train), test) == 0
    args = ["score", str(tmp_path / "test.csv"), str(tmp_path / "sub.csv"), "--prior-from", str(tmp_path / "train.csv")]
    assert main(args + ["--prior-pseudocount", "0"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{n} labelled row(s)" in err[0] and f"--prior-pseudocount {PRIOR_PSEUDOCOUNT}" in err[0]
    assert main(args) == 0  # the default pseudocount: no class gets 0
    assert capsys.readouterr().err == ""
    rep = score_report(tmp_path / "test.csv", tmp_path / "sub.csv", tmp_path / "train.csv")
    assert rep["prior"] == pytest.approx(rep["score"], rel=1e-12)  # the smoothed prior was the submission
    assert math.isfinite(rep["prior"])


# --- one prior for every caller ----------------------------------------------------------------
def test_score_cli_prior_is_the_demos_prior(tmp_path, capsys):
    """`lsdc score --prior-from train.csv` (no pseudocount flag) reports exactly the prior, ceiling and
    skill the demo writes to score.json and its summary, on one demo-sized train.csv whose rare classes
    are missing from some cells (where the exact in-sample optimum, pseudocount 0, costs ~36 nats a row)."""
    from lsdc.demo.pipeline import DEMO_STUDIES, DEMO_TEST_STUDIES, _score
    rng = np.random.default_rng(8)
    mix = (0.012, 0.85, 0.10, 0.038)  # blank, Normal/Mild, Moderate, Severe: about the real spinal mix
    train = random_labels(rng, DEMO_STUDIES, p=mix)
    test = random_labels(rng, DEMO_TEST_STUDIES, p=mix, first_id=10_000)
    assert (class_counts(train) == 0).any()  # the case the pseudocount is for
    write_train_csv(train, tmp_path / "train.csv")
    write_train_csv(test, tmp_path / "test_labels.csv")
    rows = [row_id(s, c, lv) for s in test["study_id"] for c, lv in CELLS]
    for name, alpha in (("submission.csv", 2.0), ("test_oracle.csv", 0.3)):
        sub = pd.DataFrame(rng.dirichlet([alpha] * 3, size=len(rows)), columns=list(SUBMISSION_COLUMNS))
        sub.insert(0, "row_id", rows)
        sub.to_csv(tmp_path / name, index=False)
    demo = _score(tmp_path, tmp_path / "submission.csv")
    args = ["score", str(tmp_path / "test_labels.csv"), str(tmp_path / "submission.csv"),
            "--prior-from", str(tmp_path / "train.csv"), "--oracle", str(tmp_path / "test_oracle.csv")]
    assert main(args + ["--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli == demo  # score, prior, ceiling, skill and every term's, to the last bit
    assert main(args) == 0
    score_line = capsys.readouterr().out.splitlines()[5].split()
    assert score_line[0] == "score" and float(score_line[2]) == pytest.approx(demo["prior"], abs=5e-5)
    # ... which is the prior training's metrics fit (fit_prior's default) ...
    assert demo["prior"] == pytest.approx(score_prior(test, fit_prior(train))["score"], rel=1e-12)
    # ... and not the pseudocount-0 prior the CLI used to default to
    assert main(args + ["--json", "--prior-pseudocount", "0"]) == 0
    zero = json.loads(capsys.readouterr().out)
    assert zero["prior"] > demo["prior"] + 0.5 and zero["score"] == demo["score"]


def test_no_module_outside_the_metric_sets_a_pseudocount():
    """Training, the demo and predict take fit_prior's default pseudocount (lsdc/metric/baselines.py):
    a module elsewhere that passes its own or defines a constant of its own would let their priors drift
    apart again (the demo and the CLI once scored ~0.8 and 1.92 on one train.csv)."""
    import re
    from pathlib import Path

    import lsdc
    root = Path(lsdc.__file__).parent
    own = re.compile(r"pseudocount\s*=|PSEUDOCOUNT")
    offenders = [str(p.relative_to(root)) for p in sorted(root.rglob("*.py"))
                 if p.parent.name != "metric" and own.search(p.read_text())]
    assert offenders == []
