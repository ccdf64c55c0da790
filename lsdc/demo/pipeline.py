"""The whole job end to end on a built-in synthetic dataset: :func:`demo` (the `lsdc demo` verb:
lsdc.demo.cli, whose docstring lists the stages).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.config import Config
from ..core.overrides import load_config
from ..core.schema import SAG_T2, VIEWS
from ..train.recipes import DEMO_OVERRIDES, view_schedule  # noqa: F401 (DEMO_OVERRIDES: lsdc.demo.cli)

DEMO_STUDIES = 48
DEMO_TEST_STUDIES = 24  # the score gap (predicted vs true points) is noise-limited below ~20 studies
DEMO_SEED = 2024



@dataclass(frozen=True)
class DemoBench:
    """How long the demo's benchmark stages measure: `bench loader` (``repeats``, ``min_samples``,
    ``dicom_samples``: its flags), `bench step` and `profile` (``steps`` timed after ``warmup``, and
    ``trace_steps`` traced by the profiler). The defaults are the demo's own; smaller ones make a smoke
    run of the same stages (`lsdc demo --bench-FIELD N`)."""

    repeats: int = 3
    min_samples: int = 500
    dicom_samples: int = 48
    steps: int = 10
    warmup: int = 3
    trace_steps: int = 3


class Summary:
    """Rows of (stage, what, value) collected as the demo runs."""

    def __init__(self):
        self.rows: list[tuple[str, str, str]] = []
        self.values: dict = {}

    def add(self, stage: str, what: str, value) -> None:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        self.rows.append((stage, what, text))
        self.values.setdefault(stage, {})[what] = value

    def table(self) -> str:
        w0 = max(len(r[0]) for r in self.rows)
        w1 = max(len(r[1]) for r in self.rows)
        lines = [f"{'stage':{w0}}  {'measured':{w1}}  value", f"{'-' * w0}  {'-' * w1}  -----"]
        lines += [f"{a:{w0}}  {b:{w1}}  {c}" for a, b, c in self.rows]
        return "\n".join(lines)


def _stage(summary: Summary, stage: str, fn, *args, **kwargs):
    t = time.perf_counter()
    print(f"\n=== {stage} ===", flush=True)
    out = fn(*args, **kwargs)
    summary.add(stage, "seconds", round(time.perf_counter() - t, 1))
    return out


def _bench_loader(store, data, out_json, sizes: DemoBench) -> list:
    from ..core.cli import main
    if main(["bench", "loader", "--store", str(store), "--data", str(data), "--json", str(out_json),
             "--repeats", str(sizes.repeats), "--min-samples", str(sizes.min_samples),
             "--dicom-samples", str(sizes.dicom_samples)]) != 0:
        raise RuntimeError("bench loader failed")
    return json.loads(Path(out_json).read_text())


def demo(out_dir, studies: int = DEMO_STUDIES, test_studies: int = DEMO_TEST_STUDIES, seed: int = DEMO_SEED,
         cfg: Config | None = None, workers: int | None = None, bench: DemoBench = DemoBench()) -> dict:
    from ..preprocess.convert import preprocess
    from ..synth.generate import synth

    cfg = cfg or load_config(None, DEMO_OVERRIDES)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out)
    s = Summary()
    data = out / "data"
    if not (data / "train.csv").is_file():
        shutil.rmtree(data, ignore_errors=True)
        _stage(s, "synth", synth, data, studies, seed, test_studies=test_studies, workers=workers)
    s.add("synth", "train/test studies", f"{studies}/{test_studies}")

    store = out / "store"
    rep = _stage(s, "preprocess", preprocess, data, store, "train", None, workers, None, cfg)
    for view, c in rep["counts"].items():
        s.add("preprocess", f"{view} samples", c["samples"])
    s.add("preprocess", "skipped (see store/report.json)", len(rep["skipped"]))

    runs = _train_views(s, cfg, store, out)
    _benchmarks(s, cfg, store, data, out, bench)
    _predict_and_score(s, cfg, store, data, out, runs, workers)

    (out / "summary.json").write_text(json.dumps(s.values, indent=1, default=str))
    print("\n" + s.table())
    return s.values


def _train_views(s: Summary, cfg: Config, store: Path, out: Path) -> list:
    """One fold of each view; the run directories."""
    from ..train.loop import train
    runs = []
    for view in VIEWS:
        vcfg = view_schedule(cfg, view)
        res = _stage(s, f"train {view}", train, vcfg, store, view, 0, out / "runs" / view)
        s.add(f"train {view}", "epochs", vcfg.train.epochs)
        runs.append(out / "runs" / view)
        s.add(f"train {view}", "balanced accuracy (fold 0)", float(res["balanced_accuracy"]))
        s.add(f"train {view}", "recall N/M/S", " / ".join(f"{r:.2f}" for r in res["recall"]))
        s.add(f"train {view}", "official score terms (fold 0)", float(res["score"]))
    return runs


def _benchmarks(s: Summary, cfg: Config, store: Path, data: Path, out: Path, bench: DemoBench) -> None:
    """bench loader, bench step and profile, at the sizes of ``bench``."""
    from ..benchmarks.profile import profile
    from ..benchmarks.step_bench import bench_step
    rows = _stage(s, "bench loader", _bench_loader, store, data, out / "bench_loader.json", bench)
    for r in rows:
        s.add("bench loader", f"{r['backend']}{' +aug' if r['augment'] else ''} ({r['workers']} workers) samples/s",
              round(r["samples_per_s"], 1))
    step = _stage(s, "bench step", bench_step, cfg, SAG_T2, bench.steps, bench.warmup, store)
    (out / "bench_step.json").write_text(json.dumps(step, indent=1))
    s.add("bench step", "model-only samples/s", round(step["samples_per_s"], 1))
    prof = _stage(s, "profile", profile, cfg, store, SAG_T2, bench.steps, bench.warmup, bench.trace_steps,
                  out / "profile")
    (out / "profile.json").write_text(json.dumps(prof, indent=1))
    s.add("profile", f"data-wait share ({prof['backend']})", round(prof["data_wait_share"], 3))
    s.add("profile", "data / compute s per step", f"{prof['data_s_per_step']:.4f} / {prof['compute_s_per_step']:.4f}")


def _predict_and_score(s: Summary, cfg: Config, store: Path, data: Path, out: Path, runs: list, workers) -> None:
    """Train the localiser, predict the test studies, score; predict and score again at the true points."""
    from ..inference.predict import predict
    from ..localizer.train import train_localizer
    loc = _stage(s, "localiser", train_localizer, store, out / "localizer", cfg)
    shutil.copy(out / "localizer" / "localizer.json", out / "localizer.json")
    s.add("localiser", "median error mm (held out)", loc.get("median_error_mm"))
    s.add("localiser", "slice exact / within 1", f"{loc.get('slice_exact')} / {loc.get('slice_within_1')}")

    sub = out / "submission.csv"
    pred = _stage(s, "predict", predict, data, runs, sub, "test", out / "localizer", out / "predict_work",
                  cfg=cfg, workers=workers)
    s.add("predict", "submission", str(sub))
    stack_exact = _axial_stack_exact(data, out / "predict_work", out / "localizer.json")
    s.add("predict", "axial points in the true series & stack", stack_exact["axial_stack_exact"])
    s.add("predict", "seconds per study (median)", round(pred["seconds_per_study_median"], 2))
    score = _score(data, sub)
    (out / "score.json").write_text(json.dumps(score, indent=1))
    s.add("score (test)", "score", round(score["score"], 4))
    _add_yardstick(s, "score (test)", score)

    # the same classifiers at the true points: how much the localiser costs end to end
    sub_true = out / "submission_true_coords.csv"
    _stage(s, "predict (true coords)", predict, data, runs, sub_true, "test", None, out / "predict_true_work",
           coords=data / "test_label_coordinates.csv", cfg=cfg, workers=workers)
    score_true = _score(data, sub_true)
    (out / "score_true_coords.json").write_text(json.dumps(score_true, indent=1))
    gap = float(score["score"]) - float(score_true["score"])
    s.add("predict (true coords)", "official score, true coordinates", round(float(score_true["score"]), 4))
    s.add("predict (true coords)", "gap (predicted - true coords)", round(gap, 4))


def _axial_stack_exact(data: Path, work: Path, loc_json: Path) -> dict:
    """The share of predicted subarticular points in the labelled point's series and stack (a series
    of angled slabs has one stack per slab), added to localizer.json beside the localiser's figures."""
    from ..core.readers import read_coordinates
    from ..inference.predict import COORDS_FILE
    from ..localizer.project import axial_stack_exact
    res = axial_stack_exact(data / "test_images", read_coordinates(work / COORDS_FILE),
                            read_coordinates(data / "test_label_coordinates.csv"))
    loc_json.write_text(json.dumps({**json.loads(loc_json.read_text()), **res}, indent=1))
    return res


def _score(data: Path, submission: Path) -> dict:
    """The official score of a submission beside the prior (the best constant per condition x level,
    fitted on train.csv: `lsdc score --prior-from`'s, pseudocount included) and the ceiling (synth's
    oracle submission, the best any model could do)."""
    from ..metric.baselines import score_report
    oracle = data / "test_oracle.csv"
    return score_report(data / "test_labels.csv", submission, prior_from=data / "train.csv",
                        oracle=oracle if oracle.is_file() else None)


def _add_yardstick(s: Summary, stage: str, score: dict) -> None:
    """One row per term and overall: prior / model / ceiling / skill (skill: 0 = the prior, 1 = the
    oracle; '-' where undefined)."""
    def f(v):
        return "-" if v is None else f"{v:.3f}"
    rows = [(t, score["terms"][t]) for t in ("spinal", "foraminal", "subarticular", "any_severe")]
    rows.append(("overall", {"model": score["score"], "prior": score["prior"], "ceiling": score["ceiling"],
                             "skill": score["skill"]}))
    for term, r in rows:
        s.add(stage, f"{term}: prior / model / ceiling / skill",
              " / ".join(f(r[k]) for k in ("prior", "model", "ceiling", "skill")))
    s.values[stage]["yardstick"] = {t: r for t, r in rows}
