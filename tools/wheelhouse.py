"""Build wheelhouse/: the lsdc wheel and every wheel a Kaggle GPU notebook lacks, for an offline install.

Kaggle code competitions run with the internet off; users upload this folder as a dataset and run
``pip install --no-index --find-links /kaggle/input/<wheelhouse> lsdc[dali-cu12]``. Run this script
with a Python 3.12 interpreter on Linux x86-64 (Kaggle's), online:

    python3.12 tools/wheelhouse.py --out wheelhouse --kaggle constraints/kaggle.txt

How it decides what to ship, with pip's own resolver (no hand-kept list to go stale):
1. resolve lsdc[EXTRA] with Kaggle's versions as constraints: everything lsdc needs there;
2. resolve Kaggle's preinstalled packages alone (the constraints file's names): what Kaggle has;
3. ship what (1) holds and (2) does not hold at the same version, plus the lsdc wheel itself. A package
   both need at one version is left out; one that lsdc's closure needs at another version than Kaggle's
   own resolution gives is shipped (DALI 2.4 caps ``packaging<=26.3``, say, below what Kaggle's stack
   resolves to), so pip can move it offline. The rehearsal (tools/kaggle_rehearsal.sh) checks the set.
Writes wheelhouse/manifest.json (each wheel and its size, what was left out and why). Stdlib only.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KAGGLE_PYTHON = (3, 12)


def canonical(name: str) -> str:
    """PEP 503 name: 'PyYAML' and 'pyyaml', 'scikit_learn' and 'scikit-learn' are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def constraint_names(path: Path) -> list[str]:
    """The package names pinned in a constraints file (comments and blank lines skipped)."""
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0])
    return names


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def resolve(requirements: list[str], constraints: Path) -> dict[str, tuple[str, str]]:
    """{canonical name: (name, version)} that pip would install for ``requirements`` from scratch."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        pip("install", "--dry-run", "--ignore-installed", "--quiet", "--only-binary=:all:",
            "--report", str(report), "-c", str(constraints), *requirements)
        items = json.loads(report.read_text())["install"]
    return {canonical(i["metadata"]["name"]): (i["metadata"]["name"], i["metadata"]["version"]) for i in items}


def shipped(needed: dict[str, tuple[str, str]], preinstalled: dict[str, tuple[str, str]],
            own: str = "lsdc") -> list[tuple[str, str]]:
    """What the wheelhouse must hold besides lsdc's own wheel: every needed (name, version) that Kaggle's
    own resolution does not give at that version (names compared in canonical form)."""
    return sorted(v for k, v in needed.items() if preinstalled.get(k, (None, None))[1] != v[1] and k != canonical(own))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--out", type=Path, default=ROOT / "wheelhouse")
    p.add_argument("--kaggle", type=Path, default=ROOT / "constraints" / "kaggle.txt",
                   help="Kaggle's preinstalled packages, pinned at its versions")
    p.add_argument("--extra", default="dali-cu12", help="lsdc extras to ship (Kaggle's torch is CUDA 12)")
    a = p.parse_args(argv)
    if sys.version_info[:2] != KAGGLE_PYTHON or not sys.platform.startswith("linux"):
        print(f"run this with Python {'.'.join(map(str, KAGGLE_PYTHON))} on Linux (Kaggle's), not Python "
              f"{sys.version.split()[0]} on {sys.platform}", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    for old in a.out.glob("lsdc-*.whl"):
        old.unlink()
    pip("wheel", "--quiet", "--no-deps", "-w", str(a.out), str(ROOT))
    (own,) = a.out.glob("lsdc-*.whl")
    kaggle = constraint_names(a.kaggle)
    needed = resolve([f"lsdc[{a.extra}] @ {own.resolve().as_uri()}"], a.kaggle)
    preinstalled = resolve(kaggle, a.kaggle)
    ship = shipped(needed, preinstalled)
    pip("download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(a.out),
        *[f"{n}=={v}" for n, v in ship])
    wheels = sorted(a.out.glob("*.whl"))
    keep = {canonical(n) for n, _ in ship} | {"lsdc"}
    for w in wheels:  # a wheel left from an earlier build of another set
        if canonical(w.name.split("-", 1)[0]) not in keep:
            w.unlink()
    wheels = sorted(a.out.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    manifest = {
        "python": f"{KAGGLE_PYTHON[0]}.{KAGGLE_PYTHON[1]}", "extra": a.extra,
        "install": f"pip install --no-index --find-links <this folder> 'lsdc[{a.extra}]'",
        "wheels": {w.name: w.stat().st_size for w in wheels}, "total_bytes": total,
        "left_out_kaggle_has": sorted(f"{n}=={v}" for k, (n, v) in needed.items()
                                      if (n, v) not in ship and k != "lsdc"),
    }
    (a.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{a.out}: {len(wheels)} wheels, {total / 2**20:.0f} MiB; left out (Kaggle has them): "
          f"{len(manifest['left_out_kaggle_has'])} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
