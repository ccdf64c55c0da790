"""`lsdc demo --out DIR`: the whole job on a built-in synthetic dataset, every artefact under DIR.

synth -> preprocess -> train (each view, one fold) -> bench (loader, step) -> profile -> train the
localiser -> predict the synthetic test studies -> score -> predict again at the true points (what the
localiser costs end to end), ending with a summary table of what it measured (also
DIR/summary.json), with every score beside the prior and the noise ceiling (skill). Demo scale: a
2-core CPU finishes it in under 10 minutes: it converts at ``out_px`` 48 and trains a tiny convnext
(DEMO_OVERRIDES; the spinal view for ``epochs``, the two-sided views for half of that); your own
``--key=value`` overrides win. The ``--bench-*`` flags size the benchmark stages (the defaults are
the demo's; the smallest make a smoke run of the same stages).
"""
from __future__ import annotations

import argparse
import dataclasses

from ..core.errors import InputError
from ..core.overrides import accept_overrides, load_config
from .pipeline import DEMO_OVERRIDES, DEMO_SEED, DEMO_STUDIES, DEMO_TEST_STUDIES, DemoBench, demo

#: every config section: the demo runs every stage
SECTIONS = ("preprocess", "loader", "model", "train", "localizer", "predict")
#: the help of each --bench-FIELD flag (a field of DemoBench)
BENCH_HELP = {
    "repeats": "bench loader: timed calls per figure, after a warm-up call",
    "min_samples": "bench loader: samples per timed call (whole epochs)",
    "dicom_samples": "bench loader: samples per timed call of the DICOM baseline",
    "steps": "bench step and profile: timed training steps",
    "warmup": "bench step and profile: untimed steps first",
    "trace_steps": "profile: steps recorded by torch.profiler",
}


def configure(p) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = __doc__
    p.add_argument("--out", default="demo_out", help="folder for every artefact (default demo_out/)")
    p.add_argument("--studies", type=int, default=DEMO_STUDIES)
    p.add_argument("--test-studies", type=int, default=DEMO_TEST_STUDIES)
    p.add_argument("--seed", type=int, default=DEMO_SEED)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--config", default=None)
    for f in dataclasses.fields(DemoBench):
        p.add_argument(f"--bench-{f.name.replace('_', '-')}", type=int, default=f.default, metavar="N",
                       help=f"{BENCH_HELP[f.name]} (default {f.default})")
    accept_overrides(p, SECTIONS)


def run(args) -> int:
    if args.studies < 10:
        raise InputError(f"--studies {args.studies}: the demo needs at least 10 studies for its folds")
    if args.test_studies < 1:
        raise InputError("--test-studies must be >= 1: the demo scores its own predictions")
    cfg = load_config(args.config, DEMO_OVERRIDES + list(args.overrides))
    sizes = {f.name: getattr(args, "bench_" + f.name) for f in dataclasses.fields(DemoBench)}
    for name, value in sizes.items():
        low = 0 if name == "warmup" else 1
        if value < low:
            raise InputError(f"--bench-{name.replace('_', '-')} must be >= {low}, got {value}")
    bench = DemoBench(**sizes)
    demo(args.out, args.studies, args.test_studies, args.seed, cfg, args.workers, bench)
    return 0
