"""The install's promises: ranges not pins, every direct import declared, the declared floor tested.

Read from the installed distribution's own metadata (what pip saw), not from setup.py's text.
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import wheelhouse  # noqa: E402

#: namespace packages whose top-level name many distributions share: the import -> the requirement names
NAMESPACE_IMPORTS = {"nvidia.dali": {"nvidia-dali-cuda120", "nvidia-dali-cuda130"}}


def _requirements() -> list[tuple[str, str, str]]:
    """(canonical name, specifier, marker) of every requirement of the installed lsdc, extras included."""
    out = []
    for line in md.requires("lsdc") or []:
        req, _, marker = line.partition(";")
        m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*\(?([^)]*)\)?", req)
        out.append((wheelhouse.canonical(m.group(1)), m.group(2).strip(), marker.strip()))
    return out


def _direct_imports() -> set[str]:
    """Top-level third-party modules lsdc imports (``nvidia.dali`` for the nvidia namespace)."""
    found = set()
    for path in (ROOT / "lsdc").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                     else [])
            for name in names:
                parts = name.split(".")
                top = ".".join(parts[:2]) if parts[0] == "nvidia" else parts[0]
                if parts[0] not in sys.stdlib_module_names and parts[0] not in ("lsdc", "__future__"):
                    found.add(top)
    return found


def test_every_direct_import_is_declared():
    declared = {name for name, _, _ in _requirements()}
    dists = md.packages_distributions()
    imports = _direct_imports()
    assert {"torch", "zarr", "numcodecs", "scipy", "huggingface_hub", "safetensors", "nvidia.dali"} <= imports
    missing = {}
    for mod in sorted(imports):
        wanted = NAMESPACE_IMPORTS.get(mod) or {wheelhouse.canonical(d) for d in dists.get(mod, [])}
        assert wanted, f"{mod}: no installed distribution provides it"
        if not wanted & declared:
            missing[mod] = sorted(wanted)
    assert not missing, f"imported by lsdc but not declared in setup.py: {missing}"


def test_requirements_are_ranges_with_the_tested_floor():
    reqs = _requirements()
    assert not [r for r in reqs if "==" in r[1] or "===" in r[1]], "exact pins belong in constraints/"
    assert md.metadata("lsdc")["Requires-Python"] == ">=3.11"  # no upper cap: Kaggle 3.12, Colab 3.13
    spec = {name: s for name, s, marker in reqs if not marker}
    assert "pytest" not in spec, "pytest is the `test` extra, not every user's dependency"
    assert "<" not in spec["torch"] and "<" not in spec["zarr"]
    floor = re.fullmatch(r">=\s*([\d.]+)", spec["torch"]).group(1)
    tested = {}
    for f in sorted((ROOT / "constraints").glob("dev-py*.txt")):
        pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", f.read_text(), re.M))
        tested[f.name] = pins["torch"]
    n = len(floor.split("."))
    assert any(v.split("+")[0].split(".")[:n] == floor.split(".") for v in tested.values()), (
        f"torch>={floor} is declared but the tested sets run {tested}")
    zarr_floor = re.fullmatch(r">=\s*([\d.]+)", spec["zarr"]).group(1)
    assert tuple(map(int, zarr_floor.split("."))) >= (3, 0, 8)  # 3.0.0-3.0.7 are yanked


@pytest.mark.parametrize("extra, dist", [("dali-cu12", "nvidia-dali-cuda120"), ("dali-cu13", "nvidia-dali-cuda130")])
def test_dali_extras_are_linux_only_ranges(extra, dist):
    (row,) = [r for r in _requirements() if r[0] == dist]
    assert f'extra == "{extra}"' in row[2] and 'platform_system == "Linux"' in row[2]
    assert ">=" in row[1] and "<" in row[1]  # a tested range, closed before the next major


def test_wheelhouse_ships_what_kaggle_lacks_by_canonical_name(tmp_path):
    kaggle = tmp_path / "kaggle.txt"
    kaggle.write_text("# Kaggle\ntorch==2.10.0\nscikit_learn==1.6.1  # sklearn\n\nPyYAML>=6\n")
    assert wheelhouse.constraint_names(kaggle) == ["torch", "scikit_learn", "PyYAML"]
    needed = {wheelhouse.canonical(n): (n, v) for n, v in
              [("lsdc", "0.1.0"), ("zarr", "3.1.6"), ("pyyaml", "6.0.4"), ("Scikit-Learn", "1.6.1"),
               ("nvidia-dali-cuda120", "2.4.0"), ("torch", "2.10.0")]}
    preinstalled = {wheelhouse.canonical(n): (n, v) for n, v in
                    [("torch", "2.10.0"), ("scikit_learn", "1.6.1"), ("PyYAML", "6.0.4"), ("packaging", "26.4")]}
    assert wheelhouse.shipped(needed, preinstalled) == [("nvidia-dali-cuda120", "2.4.0"), ("zarr", "3.1.6")]
    # DALI caps packaging below what Kaggle's stack resolves to: that one must travel too
    needed["packaging"] = ("packaging", "26.3")
    assert ("packaging", "26.3") in wheelhouse.shipped(needed, preinstalled)
