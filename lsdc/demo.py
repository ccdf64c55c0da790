"""`lsdc demo --out DIR`: the whole job on a built-in synthetic dataset, every artefact under DIR.

synth -> preprocess -> train -> bench -> profile -> predict -> score, ending with a summary table of
what it measured (also written as DIR/summary.json).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .core.config import Config, load_config
from .core.errors import InputError

DEMO_STUDIES = 48
DEMO_TEST_STUDIES = 12
DEMO_SEED = 2024


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


def _timed(summary: Summary, stage: str, fn, *args, **kwargs):
    t = time.perf_counter()
    print(f"\n=== {stage} ===", flush=True)
    out = fn(*args, **kwargs)
    summary.add(stage, "seconds", round(time.perf_counter() - t, 1))
    return out


def demo(out_dir, studies: int = DEMO_STUDIES, test_studies: int = DEMO_TEST_STUDIES, seed: int = DEMO_SEED,
         cfg: Config | None = None, workers: int | None = None) -> dict:
    from .preprocess.convert import preprocess
    from .synth.generate import synth

    cfg = cfg or Config()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out)
    s = Summary()
    data = out / "data"
    if not (data / "train.csv").is_file():
        _timed(s, "synth", synth, data, studies, seed, test_studies=test_studies)
    s.add("synth", "train/test studies", f"{studies}/{test_studies}")

    store = out / "store"
    rep = _timed(s, "preprocess", preprocess, data, store, "train", None, workers, None, cfg)
    for view, c in rep["counts"].items():
        s.add("preprocess", f"{view} samples", c["samples"])
    s.add("preprocess", "slices/s", round(rep["slices_read"] / max(rep["seconds"], 1e-9), 1) if rep["converted_now"] else "resumed")
    s.add("preprocess", "skipped", len(rep["skipped"]))

    (out / "summary.json").write_text(json.dumps(s.values, indent=1, default=str))
    print("\n" + s.table())
    return s.values


def configure(p) -> None:
    p.add_argument("--out", default="demo_out", help="folder for every artefact (default demo_out/)")
    p.add_argument("--studies", type=int, default=DEMO_STUDIES)
    p.add_argument("--test-studies", type=int, default=DEMO_TEST_STUDIES)
    p.add_argument("--seed", type=int, default=DEMO_SEED)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--config", default=None)
    p.add_argument("overrides", nargs="*", metavar="--key=value")


def run(args) -> int:
    if args.studies < 10:
        raise InputError(f"--studies {args.studies}: the demo needs at least 10 studies for its folds")
    demo(args.out, args.studies, args.test_studies, args.seed, load_config(args.config, args.overrides), args.workers)
    return 0
