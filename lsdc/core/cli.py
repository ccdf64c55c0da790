"""The `lsdc` console script: one verb per stage, each verb one importable function.

A verb lives in its own module, which defines ``configure(parser)`` (its arguments) and
``run(args) -> int`` (calls the verb's function). User mistakes raise :class:`InputError`, which
becomes one ``lsdc VERB: error: ...`` line and exit code 2; anything else is a bug with a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import InputError

#: verb -> (module, one-line help)
VERBS = {
    "synth": ("lsdc.synth.generate", "write a synthetic dataset in the Kaggle layout"),
    "preprocess": ("lsdc.preprocess.convert", "convert DICOM studies once into the Zarr crop store"),
    "train": ("lsdc.train.cli", "train the classifier (or the level localiser) on the store"),
    "train-localizer": ("lsdc.inference.localizer_cli", "train the sagittal level localiser on the store"),
    "bench": ("lsdc.benchmarks.cli", "throughput benchmarks: convert, loader, step"),
    "profile": ("lsdc.benchmarks.profile", "loader time vs compute time of the real training step"),
    "score": ("lsdc.metric.cli", "the official competition metric of a submission"),
    "predict": ("lsdc.inference.predict", "raw DICOM studies -> submission.csv"),
    "demo": ("lsdc.demo", "the whole job end to end on a synthetic dataset"),
    "show": ("lsdc.show.cli", "PNG montage of stored samples, or of a study's localised keypoints"),
}


def import_stage(module: str):
    """The module, or None when that stage has not landed yet (any other import error is a bug)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            return None
        raise


def not_available(name: str):
    """A run function for a stage that has not landed: a clear error, never fake success."""
    def run(args) -> int:
        raise InputError(f"'{name}' is not yet available in this version of lsdc")
    return run


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that verb's module is imported (others stay one-line stubs),
    so `lsdc synth` does not pay for importing torch."""
    parser = argparse.ArgumentParser(prog="lsdc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb, (_, help_) in VERBS.items():
        p = sub.add_parser(verb, help=help_, description=help_)
        if only is not None and verb != only:
            continue
        mod = import_stage(VERBS[verb][0])
        if mod is None:
            p.set_defaults(_run=not_available(verb))
            continue
        mod.configure(p)
        p.set_defaults(_run=mod.run)
    return parser


def accept_overrides(p: argparse.ArgumentParser) -> None:
    """Let ``p`` take ``--key=value`` config overrides anywhere on the line into ``args.overrides``.

    argparse rejects unknown options, so the sub-parser's parse_known_args keeps the ``--key=value``
    strings it did not recognise (keys are checked later by load_config, which names a bad one).
    """
    p.allow_abbrev = False  # so an override like --out_px=64 is never read as an abbreviated --out
    p.set_defaults(overrides=[])
    parse = p.parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extra = parse(args, namespace)
        is_override = [a.startswith("--") and "=" in a for a in extra]
        ns.overrides = list(ns.overrides) + [a for a, o in zip(extra, is_override) if o]
        return ns, [a for a, o in zip(extra, is_override) if not o]

    p.parse_known_args = parse_known_args
    p.epilog = ((p.epilog or "") + "\nConfig overrides: any --key=value (dotted path or unique field name, "
                "e.g. --lr=3e-4 --model.backbone=test_resnet --epochs=3).")


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
