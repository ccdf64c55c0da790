"""Severity labels of a synthetic study: an ordinal latent model, and the narrowing each grade plants.

Every (condition, level) cell gets a latent score

    z = LEVEL_SHIFT[level] + CONDITION_SHIFT[condition] + 0.35 d_study + 0.45 e_level + 0.82 e_cell

(the three e/d are independent standard normals, so z has unit variance given the shifts), graded
Normal/Mild below 0, Moderate below ``MODERATE_TO_SEVERE`` and Severe above. Conditions at one level
share ``e_level`` (correlation ~0.33), all cells of a study share ``d_study`` (~0.12).

Expected mix (exact from the model, ``expected_mix()``; checked in ``tests/test_synth.py``), enriched
against the real data (77.4 / 16.3 / 6.3 %) so a demo-sized dataset has enough Moderate and Severe
cells to learn from (Normal/Mild / Moderate / Severe):

    overall 66.8 / 20.4 / 12.7 %    spinal 71.9 / 18.2 / 9.9 %    foraminal 67.2 / 20.3 / 12.4 %
    subarticular 63.9 / 21.7 / 14.4 %
    L1/L2 88 / 9 / 2   L2/L3 80 / 15 / 5   L3/L4 67 / 22 / 11   L4/L5 46 / 29 / 25   L5/S1 54 / 27 / 19

About 1 % of cells are blank (no label, no coordinate row), mostly subarticular at L1/L2 and L2/L3;
a blank cell still has its anatomy drawn with the sampled severity.
"""
from __future__ import annotations

import numpy as np

from ..core.schema import CONDITIONS, LEFT_SS, LEVELS, RIGHT_SS, SPINAL

LEVEL_SHIFT = {"l1_l2": -1.2, "l2_l3": -0.85, "l3_l4": -0.45, "l4_l5": 0.1, "l5_s1": -0.1}
CONDITION_SHIFT = {c: (-0.15 if c == SPINAL else 0.1 if c in (LEFT_SS, RIGHT_SS) else 0.0) for c in CONDITIONS}
MODERATE_TO_SEVERE = 0.78
STUDY_SD, LEVEL_SD, CELL_SD = 0.35, 0.45, 0.82

#: probability that a cell is blank: subarticular at the two upper levels, rarely anything else
BLANK_P_UPPER_SUBARTICULAR = 0.05
BLANK_P_OTHER = 0.0025

#: narrowing fraction planted per grade (canal AP diameter, foramen fat, lateral recess), before jitter
NARROWING_RANGE = ((0.0, 0.20), (0.45, 0.60), (0.75, 0.90))
NARROWING_JITTER_SD = 0.02


def sample_severities(rng: np.random.Generator) -> np.ndarray:
    """(5 conditions, 5 levels) int8 grades 0/1/2 in CONDITIONS x LEVELS order."""
    d = rng.standard_normal()
    e_level = rng.standard_normal(len(LEVELS))
    e_cell = rng.standard_normal((len(CONDITIONS), len(LEVELS)))
    mu = np.array([[CONDITION_SHIFT[c] + LEVEL_SHIFT[lv] for lv in LEVELS] for c in CONDITIONS])
    z = mu + STUDY_SD * d + LEVEL_SD * e_level[None, :] + CELL_SD * e_cell
    return ((z >= 0).astype(np.int8) + (z >= MODERATE_TO_SEVERE).astype(np.int8))


def sample_blanks(rng: np.random.Generator) -> np.ndarray:
    """(5, 5) bool: which cells are left blank in the label file."""
    p = np.full((len(CONDITIONS), len(LEVELS)), BLANK_P_OTHER)
    for c in (LEFT_SS, RIGHT_SS):
        p[CONDITIONS.index(c), :2] = BLANK_P_UPPER_SUBARTICULAR
    return rng.random(p.shape) < p


def sample_narrowing(rng: np.random.Generator, severities: np.ndarray) -> np.ndarray:
    """Narrowing fraction in [0, 0.95] per cell, drawn within its grade's range plus a little jitter."""
    lo = np.array([r[0] for r in NARROWING_RANGE])[severities]
    hi = np.array([r[1] for r in NARROWING_RANGE])[severities]
    u = rng.random(severities.shape)
    return np.clip(lo + u * (hi - lo) + NARROWING_JITTER_SD * rng.standard_normal(severities.shape), 0.0, 0.95)


def expected_mix() -> dict:
    """Exact expected grade fractions of the model (ignoring blanks): overall, per condition, per level."""
    from scipy.stats import norm
    p = np.zeros((len(CONDITIONS), len(LEVELS), 3))
    for i, c in enumerate(CONDITIONS):
        for j, lv in enumerate(LEVELS):
            mu = CONDITION_SHIFT[c] + LEVEL_SHIFT[lv]
            a, b = norm.cdf(-mu), norm.cdf(MODERATE_TO_SEVERE - mu)
            p[i, j] = (a, b - a, 1 - b)
    return {"overall": p.mean(axis=(0, 1)),
            "condition": {c: p[i].mean(axis=0) for i, c in enumerate(CONDITIONS)},
            "level": {lv: p[:, j].mean(axis=0) for j, lv in enumerate(LEVELS)}}
