"""Shared timing helpers for every benchmark: warm-up, median of repeats, table and JSON output."""
from __future__ import annotations

import json
import resource
import statistics
import time
from pathlib import Path


def median_rate(fn, items_per_call: int, repeats: int = 5, warmup: int = 1) -> dict:
    """Call ``fn`` warmup + repeats times; items/s of the median call (and the spread)."""
    for _ in range(warmup):
        fn()
    secs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        secs.append(time.perf_counter() - t)
    med = statistics.median(secs)
    return {"per_s": items_per_call / med, "median_s": med, "min_s": min(secs), "max_s": max(secs),
            "repeats": repeats}


def cpu_s() -> float:
    """CPU seconds of this process so far, every thread included (zarr-python uses a pool)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def interleaved_rates(calls: dict, repeats: int, between=None) -> dict:
    """{name: (fn, items per call)} -> {name: (items per wall second, items per CPU second)} of the median
    call. The calls are taken in turns (one warm-up round first) so that every row sees the same
    background load (they are compared with each other); the CPU-second figure is this process's own
    CPU time, which other work on the host does not inflate (nor count: worker processes are not in
    it). ``between``, if given, runs untimed after every call (e.g. to delete what the call wrote)."""
    wall, cpu = {k: [] for k in calls}, {k: [] for k in calls}
    for r in range(repeats + 1):
        for k, (fn, _) in calls.items():
            t, c = time.perf_counter(), cpu_s()
            fn()
            if r:
                wall[k].append(time.perf_counter() - t)
                cpu[k].append(cpu_s() - c)
            if between is not None:
                between()
    return {k: (n / statistics.median(wall[k]), n / max(1e-9, statistics.median(cpu[k])))
            for k, (_, n) in calls.items()}


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB: VmHWM where /proc has it (it resets on exec,
    unlike ru_maxrss, which Linux carries over from the parent), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain fixed-width table of ``rows`` (floats with 1 decimal)."""
    def fmt(v):
        return f"{v:,.1f}" if isinstance(v, float) else str(v)
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def write_json(path, obj) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=1))
