"""`lsdc bench quality`: model quality as a benchmark over several synthetic datasets, not one lucky one.

For each of K seeds (QUALITY_SEED_BASE + k: a range that the demo, seed 2024, and the tests, seeds
below 100, never use) it synthesises N train and M test studies, converts them, and for every recipe:

    train     one fold (``train.folds``-fold split, fold --fold) of each view, or with ``--fold all``
              every fold (calibrated on all out-of-fold rows, folds averaged at prediction), with the
              demo's schedule (lsdc.train.recipes.view_schedule: the two-sided views get half the epochs);
              ``--views`` trains only some views (the others' cells take the prior: read their terms)
    classify  the test studies converted at their TRUE points, raw and calibrated
              (lsdc.inference.predict.submission_from_store, the function `lsdc predict` runs)
    localise  with --localizer: a localiser trained on the train store, then the whole `lsdc predict`
              at the PREDICTED points (calibrated, as users run it)
    score     the official score beside the prior (fitted on train.csv) and the ceiling (synth's
              oracle): skill = (prior - model) / (prior - ceiling), per term and overall

Skill is reported per seed and as mean, sd (ddof 1) and min over the seeds; every recipe after the
first is compared with the first on the same datasets, seed by seed (the delta's mean and sd).

Everything is cached under --out: a dataset by (seed, N, M), its stores by the preprocess config, a
localiser by its config, a recipe's runs and scores by the whole resolved config. A second recipe costs
only its training; a rerun of the same command reads every figure back.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.config import Config
from ..core.errors import InputError
from ..core.overrides import load_config
from ..core.schema import VIEWS
from ..metric.official import TERMS

QUALITY_SEED_BASE = 10_000
BASES = ("demo", "defaults")
COMPLETE = ".complete"
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True)
class Recipe:
    name: str
    spec: str  # "" (the base), a YAML file, or override words
    cfg: Config = field(compare=False)

    @property
    def key(self) -> str:
        return config_key(self.cfg.to_dict())


@dataclass(frozen=True)
class QualityOptions:
    out: str
    seeds: int = 5
    seed_offset: int = 0
    train_studies: int = 48
    test_studies: int = 48
    fold: int | str = 0  # a fold number, or "all"
    localizer: bool = False
    workers: int | None = None
    views: tuple = VIEWS

    @property
    def tag(self) -> str:
        """"" for every view, else "_" + the trained views (in result and submission file names)."""
        return "" if tuple(self.views) == VIEWS else "_" + "+".join(self.views)

    @property
    def seed_list(self) -> list[int]:
        return [QUALITY_SEED_BASE + self.seed_offset + k for k in range(self.seeds)]


def config_key(d: dict) -> str:
    """A short, stable hash of a (plain) config dict."""
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def base_overrides(base: str) -> list[str]:
    if base not in BASES:
        raise InputError(f"--base must be one of {BASES}, got {base!r}")
    if base == "defaults":
        return []
    from ..train.recipes import DEMO_OVERRIDES
    return list(DEMO_OVERRIDES)


def parse_recipe(text: str, base: str = "demo") -> Recipe:
    """``NAME``, ``NAME=FILE.yaml`` (a whole config) or ``NAME=--key=value ...`` (overrides on top of
    the base recipe: the demo's, or the defaults)."""
    name, _, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not _NAME.match(name):
        raise InputError(f"--recipe {text!r}: the name must be letters, digits or _.+- (then =SPEC)")
    if spec and not spec.startswith("--"):
        path = Path(spec)
        if not path.is_file():
            raise InputError(f"--recipe {text!r}: {spec} is neither a config file nor --key=value overrides")
        return Recipe(name, spec, load_config(path))
    return Recipe(name, spec, load_config(None, base_overrides(base) + shlex.split(spec)))


# -- datasets and stores (cached) ----------------------------------------------------------------
def dataset_name(seed: int, n: int, m: int) -> str:
    return f"seed{seed}_train{n}_test{m}"


def ensure_dataset(root: Path, seed: int, n: int, m: int, workers) -> Path:
    """ROOT/datasets/<name>/data, synthesised unless a complete copy is there."""
    from ..synth.generate import synth
    data = root / "datasets" / dataset_name(seed, n, m) / "data"
    if not (data / COMPLETE).is_file():
        shutil.rmtree(data, ignore_errors=True)
        synth(data, n, seed, test_studies=m, workers=workers)
        (data / COMPLETE).write_text("")
    return data


def ensure_stores(data: Path, cfg: Config, workers) -> tuple[Path, Path]:
    """(train store, test store at the true points) of ``cfg.preprocess``, beside the dataset; the
    converter itself skips a committed store."""
    from ..preprocess.convert import preprocess
    key = config_key({"preprocess": cfg.to_dict()["preprocess"]})
    train, test = data.parent / f"store_{key}", data.parent / f"test_store_{key}"
    if not (train / COMPLETE).is_file():
        preprocess(data, train, "train", None, workers, None, cfg, progress=False)
        (train / COMPLETE).write_text("")
    if not (test / COMPLETE).is_file():
        preprocess(data, test, "test", data / "test_label_coordinates.csv", workers, None, cfg, progress=False)
        (test / COMPLETE).write_text("")
    return train, test


def ensure_localizer(data: Path, store: Path, cfg: Config) -> Path:
    from ..localizer.train import train_localizer
    d = cfg.to_dict()
    out = data.parent / f"localizer_{config_key({'localizer': d['localizer'], 'preprocess': d['preprocess']})}"
    if not (out / COMPLETE).is_file():
        shutil.rmtree(out, ignore_errors=True)
        train_localizer(store, out, cfg, progress=False)
        (out / COMPLETE).write_text("")
    return out


# -- one recipe on one dataset -------------------------------------------------------------------
def train_runs(cfg: Config, store: Path, runs_dir: Path, fold: int | str, views=VIEWS) -> list[Path]:
    """One fold (or "all") of each view, resumed where a run stopped; a finished fold is read back."""
    from ..train.recipes import view_schedule
    from ..train.loop import train, train_folds
    out = []
    for view in views:
        vcfg = view_schedule(cfg, view)
        if fold == "all":
            train_folds(vcfg, store, view, runs_dir / view, resume=True)
        else:
            train(vcfg, store, view, int(fold), runs_dir / view, resume=True)
        out.append(runs_dir / view)
    return out


def score_file(data: Path, path: Path) -> dict:
    """The submission file's official score beside the prior (train.csv) and the ceiling (the oracle)."""
    from ..metric.baselines import score_report
    return score_report(data / "test_labels.csv", path, prior_from=data / "train.csv", oracle=data / "test_oracle.csv")


def score_submission(data: Path, frame, path: Path) -> dict:
    frame.to_csv(path, index=False)
    return score_file(data, path)


def evaluate(recipe: Recipe, data: Path, opts: QualityOptions, out: Path) -> dict:
    """Train (cached), classify at the true points raw and calibrated, and with --localizer predict at
    the localiser's points; the scores."""
    from ..core.readers import read_train
    from ..inference.classify import load_run
    from ..inference.predict import predict, submission_from_store
    cfg = recipe.cfg
    t0 = time.perf_counter()
    store, test_store = ensure_stores(data, cfg, opts.workers)
    t1 = time.perf_counter()
    runs = train_runs(cfg, store, out / "runs", opts.fold, opts.views)
    t2 = time.perf_counter()
    studies = sorted(int(s) for s in read_train(data / "test_labels.csv")["study_id"])
    res: dict = {"true": {}}
    for variant, calibrate in (("raw", False), ("calibrated", True)):
        loaded = [load_run(r, calibrate=calibrate) for r in runs]
        frame, _ = submission_from_store(test_store, loaded, studies, cfg.predict.tta)
        res["true"][variant] = score_submission(data, frame, out / f"submission_true_{variant}{opts.tag}.csv")
    res["calibration"] = {r.name: _params(r / "calibration.json") for r in runs}
    t3 = time.perf_counter()
    if opts.localizer:
        loc = ensure_localizer(data, store, cfg)
        sub = out / f"submission_predicted_calibrated{opts.tag}.csv"
        summary = predict(data, runs, sub, "test", loc, out / "predict_work", cfg=cfg, workers=opts.workers,
                          progress=False)
        res["predicted"] = {"calibrated": score_file(data, sub)}
        res["predict_s_per_study"] = summary["seconds_per_study_median"]
    res["seconds"] = {"stores": round(t1 - t0, 1), "train": round(t2 - t1, 1), "classify": round(t3 - t2, 1),
                      "localise+predict": round(time.perf_counter() - t3, 1)}
    return res


def _params(path: Path) -> dict | None:
    if not path.is_file():
        return None
    c = json.loads(path.read_text())
    return {k: c.get(k) for k in ("temperature", "severe_scale", "prior_weight", "rows")}


def recipe_dir(root: Path, r: Recipe, seed: int, opts: QualityOptions) -> Path:
    """ROOT/recipes/<name>_<config key>/<dataset>/fold<F>: runs, submissions, result.json."""
    return (root / "recipes" / f"{r.name}_{r.key}" / dataset_name(seed, opts.train_studies, opts.test_studies)
            / f"fold{opts.fold}")


# -- the benchmark -------------------------------------------------------------------------------
def bench_quality(recipes: list[Recipe], opts: QualityOptions, log=print) -> dict:
    """Every recipe on every seed's dataset (cached); the per-seed scores, summaries and pairs."""
    if not recipes:
        raise InputError("give at least one --recipe")
    names = [r.name for r in recipes]
    if len(set(names)) != len(names):
        raise InputError(f"recipe names must differ: {names}")
    root = Path(opts.out)
    per: dict = {r.name: {} for r in recipes}
    for seed in opts.seed_list:
        data = ensure_dataset(root, seed, opts.train_studies, opts.test_studies, opts.workers)
        for r in recipes:
            out = recipe_dir(root, r, seed, opts)
            out.mkdir(parents=True, exist_ok=True)
            r.cfg.save(out)
            cached = out / f"result{opts.tag}.json"
            want = {"fold": opts.fold, "localizer": opts.localizer}
            res = json.loads(cached.read_text()) if cached.is_file() else None
            if res is None or res.get("options") != want:  # e.g. --localizer added: scored again
                res = {"options": want, **evaluate(r, data, opts, out)}
                cached.write_text(json.dumps(res, indent=1))
            per[r.name][seed] = res
            log(f"seed {seed} {r.name}: " + ", ".join(
                f"{pts}/{var} skill {_fmt(v['skill'])}" for pts, vs in _variants(res) for var, v in vs))
    return {"options": {**opts.__dict__, "seeds": opts.seed_list},
            "recipes": {r.name: {"spec": r.spec, "key": r.key, "per_seed": per[r.name],
                                 "summary": summarise(per[r.name])} for r in recipes},
            "pairs": [pair(recipes[0].name, per[recipes[0].name], r.name, per[r.name]) for r in recipes[1:]]}


def _variants(res: dict):
    for pts in ("true", "predicted"):
        if pts in res:
            yield pts, list(res[pts].items())


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def stats(values: list) -> dict:
    """mean, sd (ddof 1; None for one value), min, max of the finite values, and n."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(v), "sd": statistics.stdev(v) if len(v) > 1 else None,
            "min": min(v), "max": max(v), "n": len(v)}


def _skills(report: dict) -> dict:
    return {"overall": report["skill"], **{t: report["terms"][t]["skill"] for t in TERMS}, "score": report["score"]}


def summarise(per_seed: dict) -> dict:
    """{points: {variant: {quantity: stats over seeds}}} for quantity = overall skill, each term's skill
    and the score."""
    out: dict = {}
    for res in per_seed.values():
        for pts, vs in _variants(res):
            for var, report in vs:
                for q, v in _skills(report).items():
                    out.setdefault(pts, {}).setdefault(var, {}).setdefault(q, []).append(v)
    return {p: {v: {q: stats(x) for q, x in qs.items()} for v, qs in vs.items()} for p, vs in out.items()}


def pair(a: str, per_a: dict, b: str, per_b: dict) -> dict:
    """Seed-by-seed deltas b - a of every (points, variant) quantity both have."""
    deltas: dict = {}
    for seed in sorted(set(per_a) & set(per_b)):
        va, vb = dict(_variants(per_a[seed])), dict(_variants(per_b[seed]))
        for pts in set(va) & set(vb):
            ra, rb = dict(va[pts]), dict(vb[pts])
            for var in set(ra) & set(rb):
                sa, sb = _skills(ra[var]), _skills(rb[var])
                for q in sa:
                    if sa[q] is not None and sb[q] is not None:
                        deltas.setdefault(pts, {}).setdefault(var, {}).setdefault(q, []).append(sb[q] - sa[q])
    return {"a": a, "b": b, "delta_b_minus_a": {p: {v: {q: stats(x) for q, x in qs.items()} for v, qs in vs.items()}
                                                for p, vs in deltas.items()}}


def pm(s: dict, digits: int = 3) -> str:
    if s["mean"] is None:
        return "-"
    sd = "" if s["sd"] is None else f" ± {s['sd']:.{digits}f}"
    return f"{s['mean']:.{digits}f}{sd}"


def summary_rows(result: dict) -> list[dict]:
    rows = []
    for name, r in result["recipes"].items():
        for pts, vs in r["summary"].items():
            for var, q in vs.items():
                rows.append({"recipe": name, "points": pts, "calibration": var, "skill": pm(q["overall"]),
                             "min seed": _fmt(q["overall"]["min"]),
                             **{t: pm(q[t], 2) for t in TERMS}, "score": pm(q["score"])})
    return rows


def pair_rows(result: dict) -> list[dict]:
    rows = []
    for p in result["pairs"]:
        for pts, vs in p["delta_b_minus_a"].items():
            for var, q in vs.items():
                rows.append({"pair (b - a)": f"{p['b']} - {p['a']}", "points": pts, "calibration": var,
                             "Δ skill": pm(q["overall"]), **{f"Δ {t}": pm(q[t], 2) for t in TERMS},
                             "Δ score": pm(q["score"])})
    return rows
