"""Every reason code the conversion emits is in one list (lsdc/core/reasons.py), and the README's
tables are exactly that list."""
from __future__ import annotations

import re
from pathlib import Path

from lsdc.core.reasons import NOTE_REASONS, READ_REASONS, SKIP_REASONS

ROOT = Path(__file__).resolve().parents[1]


def _table(marker: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split(f"<!-- {marker} -->")[1].split(f"<!-- /{marker} -->")[0]
    return re.findall(r"^\| `([a-z_0-9]+)` \|", block, flags=re.M)


def _emitted() -> set[str]:
    """Reason codes written as literals where the code creates a skip record or a SeriesError."""
    found = set()
    for path in (ROOT / "lsdc").rglob("*.py"):
        src = path.read_text()
        found |= set(re.findall(r'\b(?:skip|SeriesError)\(\s*"([a-z_0-9]+)"', src))
        for pair in re.findall(r'reason = "([a-z_0-9]+)" if \w+ else "([a-z_0-9]+)"', src):
            found |= set(pair)
    return found


def test_readme_lists_exactly_the_reasons_in_the_code():
    assert _table("skip-reasons") == list(SKIP_REASONS)
    assert _table("note-reasons") == list(NOTE_REASONS)


def test_every_reason_the_code_emits_is_listed():
    emitted = _emitted()
    assert len(emitted) >= 15, emitted  # the scan itself works
    assert emitted - set(SKIP_REASONS) - set(NOTE_REASONS) == set()
    assert set(READ_REASONS) <= emitted  # no stale read reason: each is raised somewhere
    assert {"one_slice", "instance_not_in_series", "point_outside_image", "duplicate_collapsed"} <= emitted
