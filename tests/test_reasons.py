"""Every reason code the conversion emits is one member of ``lsdc.store.reasons.Reason``, and the
README's tables are exactly that enum (codes and descriptions)."""
from __future__ import annotations

import re
from pathlib import Path

from lsdc.store.reasons import NOTE, NOTE_REASONS, READ, SKIP, SKIP_REASONS, Reason

ROOT = Path(__file__).resolve().parents[1]


def _table(marker: str) -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    block = text.split(f"<!-- {marker} -->")[1].split(f"<!-- /{marker} -->")[0]
    return re.findall(r"^\| `([a-z_0-9]+)` \| (.+?) \|$", block, flags=re.M)


def _emitted() -> set[str]:
    """Reason members named where the code creates a skip record or a SeriesError."""
    found = set()
    for path in (ROOT / "lsdc").rglob("*.py"):
        found |= set(re.findall(r"\bReason\.([A-Z_0-9]+)\b", path.read_text()))
    return {Reason[name].value for name in found}


def test_readme_lists_exactly_the_reasons_in_the_code():
    assert _table("skip-reasons") == [(r.value, r.description) for r in SKIP_REASONS]
    assert _table("note-reasons") == [(r.value, r.description) for r in NOTE_REASONS]


def test_reason_codes_are_unique_and_not_near_synonyms():
    words = [frozenset(r.value.split("_")) for r in Reason]
    assert len(set(words)) == len(words), "two reasons are the same words in another order"
    assert {r.kind for r in Reason} == {READ, SKIP, NOTE}


def test_no_reason_is_spelled_as_a_bare_string():
    """Emitters name the enum member, never a literal code (a typo there would be a new reason)."""
    codes = {r.value for r in Reason}
    for path in (ROOT / "lsdc").rglob("*.py"):
        if path.name == "reasons.py":
            continue
        for call, code in re.findall(r'\b(skip|SeriesError)\(\s*"([a-z_0-9]+)"', path.read_text()):
            assert code not in codes, f"{path}: {call}({code!r}) instead of Reason.{code.upper()}"


def test_every_reason_the_code_emits_is_listed():
    emitted = _emitted()
    assert len(emitted) >= 15, emitted  # the scan itself works
    assert emitted <= set(SKIP_REASONS) | set(NOTE_REASONS)
    assert {r.value for r in Reason if r.kind == READ} <= emitted  # no stale read reason
    assert {"one_slice", "instance_not_in_series", "point_outside_image", "duplicate_collapsed"} <= emitted
