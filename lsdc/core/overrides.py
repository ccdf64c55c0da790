"""The override engine: a :class:`~lsdc.core.config.Config` from defaults, a YAML file and ``--key=value``.

Sources, later winning: defaults < YAML file < ``--key=value`` overrides. A key is either the dotted
path (``train.lr``, ``preprocess.sagittal_t2.crop_mm``) or a field name that is unique across the
Config (``lr``, ``backbone``). Unknown keys and wrong types raise :class:`InputError` naming the key.
:func:`accept_overrides` lets a verb's parser take them, and lists the fields of the config sections
the verb uses, each with its default and its docstring, in ``lsdc VERB -h``.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
import typing
from pathlib import Path

import yaml

from . import config
from .config import Config
from .errors import InputError

def _leaf_paths(cls, prefix=()) -> dict[tuple, type]:
    """Every leaf field of a dataclass type as {path tuple: annotation}."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out.update(_leaf_paths(t, prefix + (f.name,)))
        else:
            out[prefix + (f.name,)] = t
    return out


_LEAVES = _leaf_paths(Config)
_BY_NAME: dict[str, list[tuple]] = {}
for _p in _LEAVES:
    _BY_NAME.setdefault(_p[-1], []).append(_p)


def resolve_key(key: str) -> tuple:
    """Dotted path or unique field name -> path tuple; InputError for unknown or ambiguous keys."""
    parts = tuple(key.replace("-", "_").split("."))
    if parts in _LEAVES:
        return parts
    if len(parts) == 1 and parts[0] in _BY_NAME:
        paths = _BY_NAME[parts[0]]
        if len(paths) == 1:
            return paths[0]
        raise InputError(f"config key {key!r} is ambiguous: use one of {['.'.join(p) for p in paths]}")
    raise InputError(f"unknown config key {key!r}")


def _coerce(key: str, value, annotation):
    """Check/convert one value against its field type; InputError naming the key otherwise."""
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise InputError(f"config key {key!r}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise InputError(f"config key {key!r}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise InputError(f"config key {key!r}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise InputError(f"config key {key!r}: expected a string, got {value!r}")
    if annotation is tuple:
        if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return tuple(value)
        raise InputError(f"config key {key!r}: expected a list of numbers, got {value!r}")
    raise TypeError(f"unsupported config annotation {annotation!r} for {key}")


def _flatten(d: dict, prefix=()) -> dict[tuple, object]:
    out = {}
    for k, v in d.items():
        path = prefix + (str(k),)
        if isinstance(v, dict):
            out.update(_flatten(v, path))
        else:
            out[path] = v
    return out


def build_config(values: dict | None = None) -> Config:
    """A Config from a (possibly nested, possibly partial) dict of values."""
    tree: dict = {}
    for path, value in _flatten(values or {}).items():
        key = ".".join(path)
        full = resolve_key(key)
        value = _coerce(key, value, _LEAVES[full])
        node = tree
        for p in full[:-1]:
            node = node.setdefault(p, {})
        node[full[-1]] = value
    return _instantiate(Config, tree)


def _instantiate(cls, tree: dict, default=None):
    """``default`` (else ``cls()``) with the values in ``tree`` replaced. A nested section starts from
    its parent's default for it, so overriding one field of e.g. ``preprocess.axial_t2`` keeps that
    view's own defaults (crop_mm 45) rather than the CropSpec class defaults."""
    base = cls() if default is None else default
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in tree:
            t = hints[f.name]
            kwargs[f.name] = (_instantiate(t, tree[f.name], getattr(base, f.name)) if dataclasses.is_dataclass(t)
                              else tree[f.name])
    return dataclasses.replace(base, **kwargs)


def parse_override(text: str) -> tuple[str, object]:
    """``--key=value`` or ``key=value`` -> (key, YAML-parsed value)."""
    body = text[2:] if text.startswith("--") else text
    if "=" not in body:
        raise InputError(f"override {text!r} is not of the form --key=value")
    key, raw = body.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if _LEAVES.get(resolve_key(key)) is str and not isinstance(value, str):
        value = raw  # a str field keeps the text as typed (e.g. --backbone=123)
    return key, value


def load_config(path=None, overrides=()) -> Config:
    """defaults < YAML file at ``path`` < ``overrides`` (``--key=value`` strings)."""
    values: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise InputError(f"{p}: not valid YAML ({e})") from None
        if not isinstance(loaded, dict):
            raise InputError(f"{p}: top level must be a mapping of config keys")
        values = _flatten(loaded)
        values = {".".join(k): v for k, v in values.items()}
    for text in overrides:
        key, value = parse_override(text)
        values[key] = value
    return build_config(values)


def config_from_dict(d: dict) -> Config:
    """Inverse of :meth:`Config.to_dict` (used when reading a saved config back)."""
    return build_config(d)


# -- the command line ---------------------------------------------------------------------------
OVERRIDES_NOTE = ("Config overrides: any --key=value (dotted path or unique field name, "
                  "e.g. --lr=3e-4 --model.backbone=test_resnet --epochs=3).")
HELP_WIDTH = 100


def accept_overrides(p: argparse.ArgumentParser, sections: tuple = ()) -> None:
    """Let ``p`` take ``--key=value`` config overrides anywhere on the line into ``args.overrides``, and
    list the fields of the Config ``sections`` the verb uses in its help (after any epilog it has).

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
    p.formatter_class = argparse.RawDescriptionHelpFormatter  # the field list keeps its lines
    note = textwrap.fill(OVERRIDES_NOTE, HELP_WIDTH)
    p.epilog = (p.epilog or "") + "\n" + note + "".join("\n\n" + section_help(s) for s in sections)


@functools.lru_cache(maxsize=None)
def field_docs() -> dict[str, dict[str, str]]:
    """{dataclass name: {field: docstring}} of lsdc.core.config. A field's docstring is the string
    literal right after it, which Python drops at runtime, so it is read from the module's source."""
    out: dict[str, dict[str, str]] = {}
    for node in ast.parse(inspect.getsource(config)).body:
        if not isinstance(node, ast.ClassDef):
            continue
        docs = out.setdefault(node.name, {})
        for stmt, doc in zip(node.body, node.body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(doc, ast.Expr)
                    and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
                docs[stmt.target.id] = " ".join(doc.value.value.split())
    return out


def _shown(value) -> str:
    """A default as it would be typed in an override."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ",".join(f"{v:g}" for v in value) + "]"
    if value == "":
        return '""'
    return str(value)


def _wrapped(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, HELP_WIDTH, initial_indent=indent, subsequent_indent=indent + "    ")


def _field_lines(obj, prefix: str, indent: str) -> list[str]:
    """One ``--path (default X): docstring`` entry per leaf field of the dataclass ``obj``; a nested
    dataclass (e.g. one view's crop spec) gets a heading with its docstring and its fields under it."""
    docs = field_docs().get(type(obj).__name__, {})
    lines = []
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            lines += _wrapped(f"{key}: {docs.get(f.name, '')}", indent)
            lines += _field_lines(value, key + ".", indent + "  ")
        else:
            lines += _wrapped(f"--{key} (default {_shown(value)}): {docs.get(f.name, '')}", indent)
    return lines


def section_help(section: str) -> str:
    """The help block of one Config section: its docstring, then each field with default and docstring."""
    if section not in {f.name for f in dataclasses.fields(Config)}:
        raise ValueError(f"no config section {section!r}")
    head = _wrapped(f"{section}: {field_docs()['Config'].get(section, '')}", "")
    return "\n".join(head + _field_lines(getattr(Config(), section), section + ".", "  "))
