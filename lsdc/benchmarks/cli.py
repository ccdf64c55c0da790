"""`lsdc bench convert|loader|step`: throughput benchmarks (warm-up, medians, a table, --json FILE).

Each benchmark lives in its own module with ``configure(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

from ..core.cli import import_stage, not_available

BENCHES = {
    "convert": ("lsdc.benchmarks.convert_bench", "converter slices/s vs raw pydicom reads, Numba vs NumPy kernels, peak RSS"),
    "loader": ("lsdc.benchmarks.loader_bench", "samples/s: decode bound, raw store reads, dali/torch backends, DICOM baseline"),
    "step": ("lsdc.benchmarks.step_bench", "the training step alone on in-memory batches (model compute)"),
}


def configure(p) -> None:
    sub = p.add_subparsers(dest="bench", metavar="BENCH")
    sub.required = True
    for name, (_, help_) in BENCHES.items():
        q = sub.add_parser(name, help=help_, description=help_)
        mod = import_stage(BENCHES[name][0])
        if mod is None:
            q.set_defaults(_bench_run=not_available(f"bench {name}"))
        else:
            mod.configure(q)
            q.set_defaults(_bench_run=mod.run)


def run(args) -> int:
    return args._bench_run(args)
