"""`lsdc preprocess DATA_DIR OUT`: DICOM studies -> the Zarr crop store, once, in parallel, resumably.

Studies are converted independently (a pool of worker processes), each committed atomically as a part
file (OUT/_parts/); then the store is assembled from all parts, flushed to disk, committed (its
report.json is written last) and the parts are deleted (--keep-parts keeps them). Rerunning the same
command after a crash or ``kill -9`` converts only the studies without a valid part and assembles
again; on a store already complete for the same inputs it converts nothing and says so. ``--shard
I/N`` converts only studies with ``study_id % N == I``, keeps its parts and stops before assembly;
run the command once more without ``--shard`` (on any machine that sees OUT) to assemble the store
from every shard's parts.

Exit codes: 0 done: the store is complete (with --shard: the shard's parts are), and whatever could
not be converted is skipped, listed in OUT/report.json and counted on the last line printed; 3 the
same, with --strict, when anything was skipped; 2 bad input or arguments (one error line); 130
interrupted (Ctrl-C: rerun to resume).
"""
from __future__ import annotations

from ..core.overrides import accept_overrides, load_config
from .plan import SPLITS

EXIT_SKIPPED = 3  # --strict only: the store is complete, but something was skipped


def configure(p) -> None:
    p.add_argument("data_dir", help="competition-format folder (train.csv, *_images/, ...)")
    p.add_argument("out", help="store folder (created; resumed when it exists)")
    p.add_argument("--split", default="train", choices=SPLITS)
    p.add_argument("--coords", default=None, help="coordinates in train_label_coordinates.csv format "
                   "(required for --split test; how inference reuses this converter)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--shard", default=None, metavar="I/N", help="convert only studies with study_id %% N == I")
    p.add_argument("--strict", action="store_true", help=f"exit {EXIT_SKIPPED} when anything was skipped")
    p.add_argument("--keep-parts", action="store_true",
                   help="keep OUT/_parts/ after assembly (a later rerun with changed inputs then converts "
                        "only the studies that changed)")
    p.add_argument("--config", default=None, help="YAML config file")
    p.add_argument("--no-progress", action="store_true")
    p.epilog = __doc__.split("\n\n", 1)[1]
    accept_overrides(p, ("preprocess",))


def run(args) -> int:
    from .convert import preprocess
    cfg = load_config(args.config, args.overrides)
    rep = preprocess(args.data_dir, args.out, args.split, args.coords, args.workers, args.shard, cfg,
                     progress=not args.no_progress, keep_parts=args.keep_parts)
    if rep.get("up_to_date"):
        print(f"{args.out}: the store is complete for these inputs; nothing converted")
    counts = rep.get("counts", {})
    for view, c in counts.items():
        print(f"{view:12s} {c['samples']:6d} samples  {c['studies']:5d} studies" +
              (f"  {c['volumes']:5d} volumes" if "volumes" in c else ""))
    print(f"studies {rep['studies']} (converted now {rep['converted_now']}, resumed {rep['resumed']}), "
          f"{rep['slices_read']} slices in {rep['seconds']:.1f} s")
    if rep["skipped"]:
        print(f"skipped {len(rep['skipped'])}: {rep['skip_reasons']} (details in report.json)")
        if args.strict:
            return EXIT_SKIPPED
    return 0
