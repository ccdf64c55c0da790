"""`lsdc score LABELS_CSV SUBMISSION_CSV [--json]`: the official metric of a submission file."""
from __future__ import annotations

import argparse
import json

from .official import TERMS, score_files


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labels_csv", metavar="LABELS_CSV", help="train.csv-format labels (study_id + 25 columns)")
    parser.add_argument("submission_csv", metavar="SUBMISSION_CSV",
                        help="sample_submission.csv-format predictions (row_id, normal_mild, moderate, severe)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object {score, spinal, foraminal, subarticular, any_severe}")


def format_table(result: dict) -> str:
    """The score and its four terms, one per line (the terms first, the score last)."""
    lines = [f"{'term':<14}{'log loss':>10}"]
    lines += [f"{t:<14}{result[t]:>10.4f}" for t in TERMS]
    lines.append(f"{'score':<14}{result['score']:>10.4f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    result = score_files(args.labels_csv, args.submission_csv)
    print(json.dumps(result) if args.json else format_table(result))
    return 0
