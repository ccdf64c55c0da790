"""One record of the conversion report: what was not converted (a skip) or read differently (a note),
where, and why (a :class:`lsdc.store.reasons.Reason`)."""
from __future__ import annotations

from ..store.reasons import Reason


def skip(reason: Reason, study_id=None, series_id=None, view=None, condition=None, level=None, detail="") -> dict:
    """One report record (a ``skipped`` or a ``notes`` entry of report.json)."""
    return {"study_id": study_id, "series_id": series_id, "view": view, "condition": condition,
            "level": level, "reason": Reason(reason).value, "detail": detail}
