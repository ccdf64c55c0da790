"""`lsdc predict DATA_DIR --runs RUN_DIR... --out submission.csv [--localizer DIR | --coords FILE]`

Raw DICOM studies -> submission.csv, through the same converter as training:

  1. volumes   `preprocess(DATA, WORK/volumes, coords=<header-only CSV>)`: no targets, so only the
               sagittal whole-series volumes (made as the localiser's training store made them)
  2. localise  sagittal keypoints per series -> canal (T2) and foramina (T1) points; subarticular
               points = canal + learned offset, projected into the axial series whose slab holds
               them (headers only) -> WORK/predicted_coordinates.csv (train_label_coordinates format)
  3. crops     `preprocess(DATA, WORK/crops, coords=that CSV)` with the classifiers' crop spec
  4. classify  every run directory (one view each; folds averaged; TTA slice shift +-1), then its
               calibration (RUN_DIR/calibration.json, fitted on its out-of-fold rows when missing:
               a guarded temperature, the any-severe scale, a small mix with the prior)
  5. submit    25 rows per study; a cell nothing predicted (missing series, failed read) gets the
               training prior of that condition x level (the best constant under the metric's 1/2/4
               weights, fitted on the labels of the runs' oof.csv, as `lsdc score --prior-from` fits
               it), with a warning naming the study; every row_id of sample_submission.csv is written

``--coords FILE`` skips steps 1-2 and converts at the given points (e.g. test_label_coordinates.csv,
to measure what localisation costs). Ends with a per-study timing line.
"""
from __future__ import annotations

import argparse
import sys
import warnings

from ..core.overrides import accept_overrides, load_config
from ..preprocess.plan import SPLITS


def configure(p) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = __doc__
    p.add_argument("data_dir", help="competition-format folder (<split>_series_descriptions.csv, <split>_images/)")
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR", help="run directories of `lsdc train`")
    p.add_argument("--out", required=True, help="submission CSV to write")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--localizer", default=None, metavar="DIR", help="directory of `lsdc train-localizer`")
    p.add_argument("--coords", default=None, metavar="FILE",
                   help="use these coordinates (train_label_coordinates.csv format) instead of the localiser")
    p.add_argument("--work", default=None, metavar="DIR", help="keep the intermediate stores and CSVs here")
    p.add_argument("--workers", type=int, default=None, help="conversion worker processes (default: all cores)")
    p.add_argument("--config", default=None, help="YAML config file (predict.tta, predict.calibrate)")
    p.add_argument("--no-progress", action="store_true")
    accept_overrides(p, ("predict",))


def run(args) -> int:
    from .predict import predict
    cfg = load_config(args.config, args.overrides)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = predict(args.data_dir, args.runs, args.out, args.split, args.localizer, args.work, args.coords, cfg,
                    args.workers, progress=not args.no_progress)
    for w in caught:
        print(f"lsdc predict: warning: {w.message}", file=sys.stderr)
    print(f"wrote {s['rows']} rows for {s['studies']} studies to {s['out']} "
          f"({s['prior_cells']} cells from the training prior)")
    print(f"per study: mean {s['seconds_per_study_mean']:.2f} s, median {s['seconds_per_study_median']:.2f} s "
          f"(total {s['seconds']:.1f} s; conversions shared equally)")
    return 0
