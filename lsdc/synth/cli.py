"""`lsdc synth OUT --studies N --seed S [--test-studies M] [--workers W] [--labels M]`: a synthetic
dataset in the Kaggle layout, severity planted in the anatomy only (lsdc.synth.generate describes
what is written); the output depends on the seed only, never on ``--workers``.
"""
from __future__ import annotations

from .generate import synth
from .labels import LABEL_MODELS


def configure(parser) -> None:
    parser.add_argument("out", metavar="OUT", help="output directory (must not exist, or be empty)")
    parser.add_argument("--studies", type=int, required=True, help="number of train studies (>= 1)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument("--test-studies", type=int, default=0,
                        help="number of test studies: test_images/, sample_submission.csv and answers")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel processes (default: all cores); the output does not depend on it")
    parser.add_argument("--labels", default="realistic", choices=LABEL_MODELS,
                        help="realistic: the real grade mix, reader noise and an oracle submission "
                             "(<split>_oracle.csv, the noise ceiling); clean: separable grades, for "
                             "checking learning mechanics")


def run(args) -> int:
    s = synth(args.out, args.studies, args.seed, args.test_studies, args.workers, label_model=args.labels)
    mix = " / ".join(f"{k} {v:.1%}" for k, v in s["label_mix"].items())
    print(f"wrote {s['train_studies']} train + {s['test_studies']} test studies, {s['series']} series, "
          f"{s['files']} files to {s['out_dir']} in {s['seconds']} s with {s['workers']} worker(s); "
          f"train labels: {mix}")
    return 0
