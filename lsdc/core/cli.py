"""The `lsdc` console script: one verb per stage, each verb one importable function.

Each stage's ``cli.py`` defines ``configure(parser)`` (the verb's arguments) and ``run(args) -> int``
(calls the stage's library function); library modules have no argparse. User mistakes raise
:class:`InputError`, which becomes one ``lsdc VERB: error: ...`` line and exit code 2; anything else
(an ImportError included) is a bug with a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import NamedTuple

from .errors import InputError


class Verb(NamedTuple):
    module: str
    help: str
    configure: str = "configure"  # the module's function that adds the verb's arguments
    run: str = "run"  # the module's function that runs it


VERBS = {
    "synth": Verb("lsdc.synth.cli", "write a synthetic dataset in the Kaggle layout"),
    "preprocess": Verb("lsdc.preprocess.cli", "convert DICOM studies once into the Zarr crop store"),
    "train": Verb("lsdc.train.cli", "train the classifier on the store"),
    "train-localizer": Verb("lsdc.localizer.cli", "train the sagittal level localiser on the store"),
    "bench": Verb("lsdc.benchmarks.cli", "throughput benchmarks: convert, loader, step"),
    "profile": Verb("lsdc.benchmarks.cli", "loader time vs compute time of the real training step",
                    "configure_profile", "run_profile"),
    "score": Verb("lsdc.metric.cli", "the official competition metric of a submission"),
    "predict": Verb("lsdc.inference.cli", "raw DICOM studies -> submission.csv"),
    "demo": Verb("lsdc.demo.cli", "the whole job end to end on a synthetic dataset"),
    "show": Verb("lsdc.show.cli", "PNG montage of stored samples, or of a study's localised keypoints"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that verb's module is imported (the others stay one-line help),
    so `lsdc synth` does not pay for importing torch."""
    parser = argparse.ArgumentParser(prog="lsdc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for name, verb in VERBS.items():
        p = sub.add_parser(name, help=verb.help, description=verb.help)
        if only is not None and name != only:
            continue
        mod = importlib.import_module(verb.module)
        getattr(mod, verb.configure)(p)
        p.set_defaults(_run=getattr(mod, verb.run))
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=verb if verb in VERBS else "")  # "": import no verb module
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except InputError as e:
        print(f"lsdc {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lsdc {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
