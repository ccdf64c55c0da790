"""The RSNA 2024 lumbar-spine data model: conditions, levels, severities, views and IDs.

Everything that names a condition, level, severity or view imports it from here; no other module
spells these strings.
"""
from __future__ import annotations

import re

from .errors import InputError, where

# --- conditions -------------------------------------------------------------------------------
SPINAL = "spinal_canal_stenosis"
LEFT_NFN = "left_neural_foraminal_narrowing"
RIGHT_NFN = "right_neural_foraminal_narrowing"
LEFT_SS = "left_subarticular_stenosis"
RIGHT_SS = "right_subarticular_stenosis"
CONDITIONS = (SPINAL, LEFT_NFN, RIGHT_NFN, LEFT_SS, RIGHT_SS)

#: condition as written in train_label_coordinates.csv -> snake-case name used everywhere else
CONDITION_FROM_TITLE = {c.replace("_", " ").title(): c for c in CONDITIONS}
CONDITION_TITLE = {c: t for t, c in CONDITION_FROM_TITLE.items()}

# --- levels -----------------------------------------------------------------------------------
LEVELS = ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")
LEVEL_FROM_TITLE = {lv.upper().replace("_", "/"): lv for lv in LEVELS}  # "L1/L2" -> "l1_l2"
LEVEL_TITLE = {lv: t for t, lv in LEVEL_FROM_TITLE.items()}

# --- severities -------------------------------------------------------------------------------
SEVERITIES = ("Normal/Mild", "Moderate", "Severe")
SEVERITY_INDEX = {s: i for i, s in enumerate(SEVERITIES)}
SUBMISSION_COLUMNS = ("normal_mild", "moderate", "severe")
BLANK = -1  # label code of a blank cell in train.csv (not scored)
#: official metric: row weight by true class
SEVERITY_WEIGHTS = (1.0, 2.0, 4.0)

# --- views and sides --------------------------------------------------------------------------
SAG_T2 = "sagittal_t2"
SAG_T1 = "sagittal_t1"
AX_T2 = "axial_t2"
VIEWS = (SAG_T2, SAG_T1, AX_T2)
VIEW_FROM_DESCRIPTION = {"Sagittal T2/STIR": SAG_T2, "Sagittal T1": SAG_T1, "Axial T2": AX_T2}
DESCRIPTION_OF_VIEW = {v: d for d, v in VIEW_FROM_DESCRIPTION.items()}

CENTER, LEFT, RIGHT = "center", "left", "right"
SIDES = (CENTER, LEFT, RIGHT)

#: which view grades which condition, and on which side
CONDITION_VIEW = {SPINAL: SAG_T2, LEFT_NFN: SAG_T1, RIGHT_NFN: SAG_T1, LEFT_SS: AX_T2, RIGHT_SS: AX_T2}
CONDITION_SIDE = {SPINAL: CENTER, LEFT_NFN: LEFT, RIGHT_NFN: RIGHT, LEFT_SS: LEFT, RIGHT_SS: RIGHT}
#: the conditions graded on a view, in CONDITIONS order
VIEW_CONDITIONS = {v: tuple(c for c in CONDITIONS if CONDITION_VIEW[c] == v) for v in VIEWS}
#: the sides a view is sampled on (one sample per study, level and side)
VIEW_SIDES = {v: tuple(CONDITION_SIDE[c] for c in VIEW_CONDITIONS[v]) for v in VIEWS}
CONDITION_OF = {(CONDITION_VIEW[c], CONDITION_SIDE[c]): c for c in CONDITIONS}

# --- metric groups ----------------------------------------------------------------------------
GROUPS = {"spinal": (SPINAL,), "foraminal": (LEFT_NFN, RIGHT_NFN), "subarticular": (LEFT_SS, RIGHT_SS)}
GROUP_OF = {c: g for g, cs in GROUPS.items() for c in cs}


def label_column(condition: str, level: str) -> str:
    """train.csv column of a (condition, level) cell, e.g. ``spinal_canal_stenosis_l4_l5``."""
    return f"{condition}_{level}"


LABEL_COLUMNS = tuple(label_column(c, lv) for c in CONDITIONS for lv in LEVELS)


def row_id(study_id: int, condition: str, level: str) -> str:
    """sample_submission.csv row id, e.g. ``4003253_spinal_canal_stenosis_l1_l2``."""
    return f"{int(study_id)}_{condition}_{level}"


_ROW_ID = re.compile(r"^(\d+)_(" + "|".join(CONDITIONS) + r")_(" + "|".join(LEVELS) + r")$")


def parse_row_id(value: str) -> tuple[int, str, str]:
    """Inverse of :func:`row_id`; raises ``ValueError`` on anything else."""
    m = _ROW_ID.match(str(value))
    if not m:
        raise ValueError(f"not a row_id: {value!r}")
    return int(m.group(1)), m.group(2), m.group(3)


_INT = re.compile(r"^\s*\+?\d+\s*$")


def plain(value):
    """A NumPy scalar (a pandas cell) as the Python number it holds, so messages print ``5``, never
    ``np.int64(5)``; anything else as it is."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def parse_id(value, path="", line=None, column=None) -> int:
    """A study/series ID or instance number as a non-negative int.

    Anything else (``../x``, ``1.5``, empty) is an :class:`InputError` naming the place; an ID is
    never joined into a path before it has been through here. NumPy scalars count as the Python
    numbers they hold (and messages print them plainly: ``5``, never ``np.int64(5)``).
    """
    value = plain(value)
    if isinstance(value, bool):
        raise InputError(f"{where(path, line, column)}: ID {value!r} is not an integer")
    if isinstance(value, int):
        if value < 0:
            raise InputError(f"{where(path, line, column)}: ID {value!r} is negative")
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str) and _INT.match(value):
        return int(value)
    raise InputError(f"{where(path, line, column)}: ID {value!r} is not a non-negative integer")
