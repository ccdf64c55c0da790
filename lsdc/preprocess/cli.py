"""`lsdc preprocess DATA_DIR OUT`: DICOM studies -> the Zarr crop store, once, in parallel, resumably.

Studies are converted independently (a pool of worker processes), each committed atomically as a part
file; then the store is assembled from all parts. Rerunning the same command after a crash or
``kill -9`` converts only the studies without a valid part and assembles again. ``--shard I/N``
converts only studies with ``study_id % N == I`` and stops before assembly; run the command once more
without ``--shard`` (on any machine that sees OUT) to assemble the store from every shard's parts.

Exit codes: 0 all converted; 3 converted, but something was skipped (see OUT/report.json);
2 bad input (one error line).
"""
from __future__ import annotations

from ..core.overrides import accept_overrides, load_config
from .plan import SPLITS

EXIT_SKIPPED = 3


def configure(p) -> None:
    p.add_argument("data_dir", help="competition-format folder (train.csv, *_images/, ...)")
    p.add_argument("out", help="store folder (created; resumed when it exists)")
    p.add_argument("--split", default="train", choices=SPLITS)
    p.add_argument("--coords", default=None, help="coordinates in train_label_coordinates.csv format "
                   "(required for --split test; how inference reuses this converter)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--shard", default=None, metavar="I/N", help="convert only studies with study_id %% N == I")
    p.add_argument("--config", default=None, help="YAML config file")
    p.add_argument("--no-progress", action="store_true")
    p.epilog = __doc__.split("\n\n", 1)[1]
    accept_overrides(p, ("preprocess",))


def run(args) -> int:
    from .convert import preprocess
    cfg = load_config(args.config, args.overrides)
    rep = preprocess(args.data_dir, args.out, args.split, args.coords, args.workers, args.shard, cfg,
                     progress=not args.no_progress)
    counts = rep.get("counts", {})
    for view, c in counts.items():
        print(f"{view:12s} {c['samples']:6d} samples  {c['studies']:5d} studies" +
              (f"  {c['volumes']:5d} volumes" if "volumes" in c else ""))
    print(f"studies {rep['studies']} (converted now {rep['converted_now']}, resumed {rep['resumed']}), "
          f"{rep['slices_read']} slices in {rep['seconds']:.1f} s")
    if rep["skipped"]:
        print(f"skipped {len(rep['skipped'])}: {rep['skip_reasons']} (details in report.json)")
        return EXIT_SKIPPED
    return 0
