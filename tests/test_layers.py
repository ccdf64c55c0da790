"""The package layout follows the flow DICOM -> store -> loader -> model -> loop -> localiser -> predict:
no module imports from a later stage (module-level or inside a function), and no function is long."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "lsdc"

#: each package's stage; a module may import only from packages of its own or an earlier stage
STAGE = {
    "core": 0, "metric": 1, "store": 1, "synth": 1, "preprocess": 2, "loaders": 3, "model": 4, "train": 5,
    "localizer": 6, "inference": 7, "benchmarks": 8, "show": 8, "demo": 9,
}
MAX_FUNCTION_LINES = 80


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "lsdc" else None


def _imports(path: Path):
    """(line, imported lsdc module) of every import in ``path``, relative ones resolved."""
    here = ["lsdc", *path.relative_to(ROOT).with_suffix("").parts]
    if here[-1] == "__init__":
        here = here[:-1]
    else:
        here = here[:-1]  # the package the module is in
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield node.lineno, mod
            for a in node.names:  # `from lsdc import train` names a package
                yield node.lineno, f"{mod}.{a.name}"


def _modules():
    return sorted(p for p in ROOT.rglob("*.py"))


def test_every_package_has_a_stage():
    packages = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in _modules()} - {"__init__"}
    assert packages == set(STAGE), packages ^ set(STAGE)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_from_a_later_stage(path):
    own = path.relative_to(ROOT).parts[0].removesuffix(".py")
    if own == "__init__":
        return
    for line, mod in _imports(path):
        pkg = _package(mod)
        if pkg in STAGE:
            assert STAGE[pkg] <= STAGE[own], f"{path}:{line} ({own}) imports {mod} ({pkg}, a later stage)"


def test_the_scan_sees_imports():
    """The checker itself: relative imports resolve to the right package."""
    found = {m for _, m in _imports(ROOT / "inference" / "predict.py")}
    assert {"lsdc.localizer.project", "lsdc.store.reader", "lsdc.train.device"} <= found  # `from ..x import y`
    assert "lsdc.inference.classify" in found  # `from . import classify`


def test_no_function_is_over_80_lines():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long
