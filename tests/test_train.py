"""Training pieces that need no store: folds, lr schedule, best-epoch gate, view score, checkpoints, CLI."""
import math
import random

import numpy as np
import pandas as pd
import pytest
import torch

from lsdc.core.errors import InputError
from lsdc.core.overrides import accept_overrides, load_config
from lsdc.core.schema import LEVELS, SEVERITY_WEIGHTS, VIEW_CONDITIONS
from lsdc.metric.official import weighted_log_loss
from lsdc.train import checkpoint as ckpt_io
from lsdc.train.evaluate import is_better
from lsdc.train.folds import assign_folds, split_rows
from lsdc.train.report import view_score, view_terms
from lsdc.train.schedule import lr_lambda
from lsdc.train.step import build_step, train_step

TINY = ["--backbone=test_efficientnet", "--proj_dim=16", "--gru_hidden=8", "--gru_layers=1", "--attn_dim=8",
        "--level_emb_dim=4", "--batch_size=4"]


def index_frame(n_studies=30, seed=0, sides=1):
    rng = np.random.default_rng(seed)
    rows = [dict(study_id=1000 + s, level=lv, label=int(rng.choice([-1, 0, 1, 2], p=[.05, .6, .2, .15])))
            for s in range(n_studies) for lv in LEVELS for _ in range(sides)]
    return pd.DataFrame(rows)


def test_folds_group_by_study_cover_all_rows_and_are_seeded():
    idx = index_frame()
    f = assign_folds(idx, 5, seed=3)
    assert set(f) == set(range(5))
    assert idx.assign(f=f).groupby("study_id")["f"].nunique().max() == 1  # a study never straddles folds
    assert (f == assign_folds(idx, 5, seed=3)).all()
    assert (f != assign_folds(idx, 5, seed=4)).any()
    tr, va = split_rows(idx, 5, 3, fold=2)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(idx)
    # stratified: every fold holds every class when each class has >= folds studies
    for k in range(5):
        assert set(idx.label[f == k]) >= {0, 1, 2}


def test_folds_errors_name_the_setting():
    with pytest.raises(InputError, match="folds"):
        assign_folds(index_frame(n_studies=3), 5, 0)
    with pytest.raises(InputError, match="fold 7"):
        split_rows(index_frame(), 5, 0, fold=7)


def test_lr_warmup_then_cosine_to_zero():
    f = lr_lambda(warmup_steps=4, total_steps=20)
    ramp = [f(i) for i in range(5)]
    assert ramp == sorted(ramp) and ramp[0] > 0 and math.isclose(f(4), 1.0)
    decay = [f(i) for i in range(4, 21)]
    assert decay == sorted(decay, reverse=True) and math.isclose(f(20), 0.0, abs_tol=1e-12)
    assert math.isclose(f(12), 0.5)  # half-way through the cosine


def test_scheduler_scales_each_groups_own_peak_lr():
    cfg = load_config(None, TINY + ["--lr=0.001", "--backbone_lr=0.0001", "--warmup_epochs=0", "--epochs=2"])
    s = build_step(cfg, "sagittal_t2", steps_per_epoch=5, device=torch.device("cpu"))
    peaks = {g["name"]: g["lr"] for g in s.optimizer.param_groups}
    assert peaks["backbone"] == pytest.approx(1e-4) and peaks["head"] == pytest.approx(1e-3)
    wd = {g["name"]: g["weight_decay"] for g in s.optimizer.param_groups}
    assert wd["backbone"] == 0.03 and wd["head"] == 0.01 and wd["head_no_decay"] == 0.0


def test_dead_class_gate_beats_metric():
    bad = {"epoch": 0, "value": 0.9, "gate_ok": False}
    ok = {"epoch": 1, "value": 0.5, "gate_ok": True}
    assert is_better(bad, None, "balanced_accuracy")  # the first epoch is best whatever it is
    assert is_better(ok, bad, "balanced_accuracy")  # a gate-passing epoch replaces a dead-class one
    assert not is_better({"epoch": 2, "value": 0.99, "gate_ok": False}, ok, "balanced_accuracy")
    assert is_better({"epoch": 3, "value": 0.95, "gate_ok": False}, bad, "balanced_accuracy")  # none passes yet
    assert is_better({"epoch": 4, "value": 0.3, "gate_ok": True}, {"epoch": 1, "value": 0.5, "gate_ok": True}, "score")
    assert not is_better({"epoch": 5, "value": float("nan"), "gate_ok": True}, ok, "balanced_accuracy")


def _pred(view, n_studies=4, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_studies):
        for c in VIEW_CONDITIONS[view]:
            for lv in LEVELS:
                p = rng.dirichlet([1, 1, 1])
                rows.append(dict(study_id=10 + s, condition=c, level=lv, label=int(rng.integers(0, 3)),
                                 p0=p[0], p1=p[1], p2=p[2]))
    return pd.DataFrame(rows)


def test_view_score_spinal_is_mean_of_spinal_and_any_severe_terms():
    pred = _pred("sagittal_t2")
    y, p = pred.label.to_numpy(), pred[["p0", "p1", "p2"]].to_numpy()
    spinal = weighted_log_loss(y, p, np.asarray(SEVERITY_WEIGHTS)[y])
    g = pred.groupby("study_id")
    ys = g.label.max().eq(2).astype(int).to_numpy()
    ps = g.p2.max().to_numpy()
    ws = g.label.max().map(lambda m: SEVERITY_WEIGHTS[m]).to_numpy()
    any_severe = weighted_log_loss(ys, np.stack([1 - ps, ps], 1), ws)
    res = view_score("sagittal_t2", pred)
    assert view_terms("sagittal_t2") == ("spinal", "any_severe")
    assert res["spinal"] == pytest.approx(spinal) and res["any_severe"] == pytest.approx(any_severe)
    assert res["score"] == pytest.approx((spinal + any_severe) / 2)


@pytest.mark.parametrize("view,term", [("sagittal_t1", "foraminal"), ("axial_t2", "subarticular")])
def test_view_score_two_sided_views_and_duplicate_cells(view, term):
    pred = _pred(view)
    y, p = pred.label.to_numpy(), pred[["p0", "p1", "p2"]].to_numpy()
    expect = weighted_log_loss(y, p, np.asarray(SEVERITY_WEIGHTS)[y])
    assert view_terms(view) == (term,)
    assert view_score(view, pred) == pytest.approx({"score": expect, term: expect})
    # a cell predicted twice (two series) is scored once, with the mean prediction
    dup = pd.concat([pred, pred.assign(p0=pred.p0)]).reset_index(drop=True)
    assert view_score(view, dup)["score"] == pytest.approx(expect)
    blank = pred.assign(label=-1)
    assert math.isnan(view_score(view, blank)["score"])


def test_rng_state_round_trip_through_weights_only_load(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = ckpt_io.rng_state()
    torch.save({"rng": [state]}, tmp_path / "r.pt")
    loaded = torch.load(tmp_path / "r.pt", weights_only=True)["rng"][0]
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt_io.set_rng_state(loaded)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_train_step_lowers_the_loss_on_a_fixed_batch():
    from lsdc.benchmarks.step_bench import synthetic_batch
    cfg = load_config(None, TINY + ["--lr=0.003", "--backbone_lr=0.003", "--warmup_epochs=0", "--epochs=1",
                                    "--preprocess.sagittal_t1.out_px=32", "--preprocess.sagittal_t1.slices=3"])
    torch.manual_seed(0)
    s = build_step(cfg, "sagittal_t1", steps_per_epoch=1000, device=torch.device("cpu"))
    s.model.train()
    batch = synthetic_batch(cfg, "sagittal_t1")
    assert batch["image"].shape == (4, 3, 3, 32, 32)
    losses = [train_step(s, batch)["loss"].item() for _ in range(15)]
    assert np.isfinite(losses).all() and min(losses[-3:]) < losses[0]


def test_overrides_are_collected_from_anywhere_on_the_line():
    import argparse
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="verb")
    q = sub.add_parser("train")
    q.add_argument("store")
    q.add_argument("--out")
    accept_overrides(q)
    args = p.parse_args(["train", "--lr=0.5", "S", "--out", "O", "--out_px=64", "--model.backbone=test_resnet"])
    assert args.store == "S" and args.out == "O"
    assert args.overrides == ["--lr=0.5", "--out_px=64", "--model.backbone=test_resnet"]
    with pytest.raises(SystemExit):
        p.parse_args(["train", "S", "--bogus"])  # not a --key=value: still an argparse error


def test_bench_step_reports_a_median(tmp_path):
    from lsdc.benchmarks.step_bench import bench_step
    cfg = load_config(None, TINY + ["--preprocess.sagittal_t2.out_px=32", "--preprocess.sagittal_t2.slices=3"])
    res = bench_step(cfg, "sagittal_t2", steps=3, warmup=1)
    assert res["shape"] == [4, 3, 3, 32, 32] and res["samples_per_s"] > 0
    assert res["step_s_min"] <= res["step_s_median"] <= res["step_s_max"]


def test_load_model_rebuilds_a_predictor(tmp_path):
    cfg = load_config(None, TINY)
    s = build_step(cfg, "axial_t2", steps_per_epoch=2, device=torch.device("cpu"))
    ckpt_io.save(tmp_path / "best.pt", model=s.model, optimizer=s.optimizer, scheduler=s.scheduler, scaler=None,
                 rng=[ckpt_io.rng_state()], epoch=0, step=2, best={"epoch": 0, "value": 0.5, "gate_ok": True},
                 bad_epochs=0, cfg=cfg, meta={"view": "axial_t2", "fold": 0, "in_chans": 3, "two_sided": True})
    model, cfg2, meta = ckpt_io.load_model(tmp_path / "best.pt")
    assert meta["two_sided"] and cfg2.model.backbone == "test_efficientnet" and not model.training
    x = torch.randn(2, 7, 3, 32, 32)
    out = model(x, torch.tensor([0, 3]), torch.tensor([0, 1]))
    assert out["logits"].shape == (2, 3)
    s.model.eval()
    torch.testing.assert_close(out["logits"], s.model(x, torch.tensor([0, 3]), torch.tensor([0, 1]))["logits"])
