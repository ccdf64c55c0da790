"""`lsdc score LABELS_CSV SUBMISSION_CSV [--prior-from TRAIN_CSV [--prior-pseudocount A]]
[--oracle FILE [--tilt-oracle]] [--json]`: the official metric of a submission file, optionally beside
the prior (the best constant prediction per cell, fitted on TRAIN_CSV by the one function training and
the demo use, lsdc.metric.baselines.fit_prior, with its pseudocount unless A is given), the ceiling (an
oracle submission's score) and the skill between them; see lsdc.metric.baselines. Without those flags
the output is exactly what it always was (other code parses it)."""
from __future__ import annotations

import argparse
import json
import sys

from ..core.errors import InputError
from .baselines import PRIOR_PSEUDOCOUNT, score_report
from .official import TERMS, score_files

SKILL_NOTE = "skill = (prior - model) / (prior - ceiling): 0 = the prior, 1 = the oracle; - = ceiling not below prior"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labels_csv", metavar="LABELS_CSV", help="train.csv-format labels (study_id + 25 columns)")
    parser.add_argument("submission_csv", metavar="SUBMISSION_CSV",
                        help="sample_submission.csv-format predictions (row_id, normal_mild, moderate, severe)")
    parser.add_argument("--prior-from", metavar="TRAIN_CSV", default=None,
                        help="train.csv-format labels to fit the prior on (the best constant prediction per "
                             "condition and level); adds a 'prior' column")
    parser.add_argument("--prior-pseudocount", metavar="A", type=float, default=None,
                        help=f"prior p_k proportional to w_k (n_k + A) (default {PRIOR_PSEUDOCOUNT}, as in "
                             "training and the demo; 0 is the exact optimum on TRAIN_CSV itself, which gives a "
                             "class never seen in a cell probability 0)")
    parser.add_argument("--oracle", metavar="FILE", default=None,
                        help="an oracle submission (e.g. the synthetic test_oracle.csv) scored as the ceiling; "
                             "with --prior-from also the skill")
    parser.add_argument("--tilt-oracle", action="store_true",
                        help="FILE holds posteriors pi: score p_k proportional to w_k pi_k (w = 1/2/4), the "
                             "submission with the least expected weighted loss, as the ceiling")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object {score, spinal, foraminal, subarticular, any_severe}; with "
                             "--prior-from/--oracle also prior, ceiling, skill and terms {term: {model, prior, "
                             "ceiling, skill}}")


def format_table(result: dict) -> str:
    """The score and its four terms, one per line (the terms first, the score last); a report from
    :func:`lsdc.metric.baselines.score_report` adds the prior, ceiling and skill columns it holds."""
    if "terms" not in result:
        lines = [f"{'term':<14}{'log loss':>10}"]
        lines += [f"{t:<14}{result[t]:>10.4f}" for t in TERMS]
        lines.append(f"{'score':<14}{result['score']:>10.4f}")
        return "\n".join(lines)
    cols = ["model"] + [c for c in ("prior", "ceiling") if result[c] is not None]
    if result["prior"] is not None and result["ceiling"] is not None:
        cols.append("skill")
    titles = {"model": "log loss", "prior": "prior", "ceiling": "ceiling", "skill": "skill"}
    rows = [(t, result["terms"][t]) for t in TERMS]
    rows.append(("score", {"model": result["score"], "prior": result["prior"], "ceiling": result["ceiling"],
                           "skill": result["skill"]}))

    def cell(v):
        return f"{'-':>10}" if v is None else f"{v:>10.4f}"
    lines = [f"{'term':<14}" + "".join(f"{titles[c]:>10}" for c in cols)]
    lines += [f"{name:<14}" + "".join(cell(values[c]) for c in cols) for name, values in rows]
    if "skill" in cols:
        lines.append(SKILL_NOTE)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.tilt_oracle and args.oracle is None:
        raise InputError("--tilt-oracle needs --oracle FILE")
    if args.prior_pseudocount is not None and args.prior_from is None:
        raise InputError("--prior-pseudocount needs --prior-from TRAIN_CSV")
    if args.prior_from is None and args.oracle is None:
        result = score_files(args.labels_csv, args.submission_csv)
    else:
        pseudocount = PRIOR_PSEUDOCOUNT if args.prior_pseudocount is None else args.prior_pseudocount
        if not 0 <= pseudocount < float("inf"):  # also NaN
            raise InputError(f"--prior-pseudocount must be a finite number >= 0, not {pseudocount}")
        notes: list[str] = []
        result = score_report(args.labels_csv, args.submission_csv, prior_from=args.prior_from, oracle=args.oracle,
                              pseudocount=pseudocount, tilt_oracle=args.tilt_oracle, notes=notes)
        for note in notes:
            print(f"lsdc score: note: {note}", file=sys.stderr)
    print(json.dumps(result) if args.json else format_table(result))
    return 0
