"""Severity labels of a synthetic study: a continuous latent severity per cell, the narrowing it plants
in the anatomy, and the grade a noisy reader gives it.

Every (condition, level) cell gets a latent severity

    s = MU[condition][level] + 0.35 d_study + 0.45 e_level + 0.82 e_cell

(independent standard normals; unit variance given the shift; conditions at one level share ``e_level``
(correlation ~0.33), all cells of a study share ``d_study`` (~0.12)). Two label models:

``realistic`` (the default)
    The anatomy's narrowing is a smooth, increasing function of ``s`` (:func:`narrowing_of`), not three
    steps. A reader grades ``s + READER_SD * eps``: Normal/Mild below 0, Moderate below the condition's
    ``GAP``, Severe above. ``MU`` (per condition and level) and ``GAP`` (per condition) are solved so
    that the grade mix matches the real train.csv (spinal 87.8 / 7.5 / 4.8 %, foraminal 78.0 / 18.1 /
    4.0 %, subarticular 71.4 / 19.0 / 9.6 %) with the severe cases where the real ones sit (spinal
    L4/L5 then L3/L4, foraminal L5/S1 and L4/L5, subarticular L4/L5). The exact posterior
    P(grade | s) of every cell is known (:func:`posterior`), so synth writes the best possible
    submission (the oracle) and its score is the noise ceiling of the data. ~1.2 % of labels are blank,
    mostly subarticular L1/L2 (~8 %) and L2/L3 (~4 %).
``clean``
    The old mix, enriched for learning (66.8 / 20.4 / 12.7 %), no reader noise: the grade is a step
    function of ``s`` and the narrowing is drawn inside the grade's range (``CLEAN_NARROWING``), so
    grades are separable by eye. For tests that only check learning mechanics.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from ..core.schema import CONDITIONS, GROUP_OF, LEFT_SS, LEVELS, RIGHT_SS, SEVERITY_WEIGHTS, SPINAL

LABEL_MODELS = ("realistic", "clean")
STUDY_SD, LEVEL_SD, CELL_SD = 0.35, 0.45, 0.82

#: reader noise, in units of the latent severity's spread: sets the noise ceiling (oracle score ~0.3)
READER_SD = 0.35
#: real train.csv: Normal/Mild fraction per condition group and level (L1/L2 .. L5/S1), and the
#: group's Severe fraction; Moderate is the rest. Level profiles follow the published EDA.
NORMAL_FRAC = {"spinal": (0.955, 0.90, 0.84, 0.74, 0.955),
               "foraminal": (0.95, 0.90, 0.80, 0.64, 0.61),
               "subarticular": (0.90, 0.83, 0.70, 0.50, 0.64)}
SEVERE_FRAC = {"spinal": 0.048, "foraminal": 0.040, "subarticular": 0.096}
#: narrowing at latent severity knots (0 = the Normal/Moderate cut, GAP = the Moderate/Severe cut)
NARROWING_KNOTS = ((-2.5, 0.0), (0.0, 0.33), ("gap", 0.67), ("gap+1.5", 0.92))
#: blank rates (real: 1.2 % of labels, mostly subarticular at the two upper levels)
BLANK_P = {"subarticular_l1_l2": 0.08, "subarticular_l2_l3": 0.04, "other": 0.0015}

# -- the clean model (the former default) --------------------------------------------------------
CLEAN_LEVEL_SHIFT = {"l1_l2": -1.2, "l2_l3": -0.85, "l3_l4": -0.45, "l4_l5": 0.1, "l5_s1": -0.1}
CLEAN_CONDITION_SHIFT = {c: (-0.15 if c == SPINAL else 0.1 if c in (LEFT_SS, RIGHT_SS) else 0.0) for c in CONDITIONS}
CLEAN_GAP = 0.78
CLEAN_NARROWING = ((0.0, 0.20), (0.45, 0.60), (0.75, 0.90))
CLEAN_NARROWING_JITTER_SD = 0.02
CLEAN_BLANK_P = {"subarticular_l1_l2": 0.05, "subarticular_l2_l3": 0.05, "other": 0.0025}


@dataclass(frozen=True)
class Cells:
    """One study's cells, (5 conditions, 5 levels) in schema order."""

    grade: np.ndarray  # int8 0/1/2: the label a reader wrote
    narrowing: np.ndarray  # float in [0, 0.95]: what the anatomy shows
    latent: np.ndarray  # float: the latent severity s
    posterior: np.ndarray  # float (5, 5, 3): P(grade | s), what the best possible model would say


@lru_cache(maxsize=None)
def realistic_params() -> tuple[np.ndarray, np.ndarray]:
    """(MU (5 conditions, 5 levels), GAP (5,)) solved from the real mix (exact, see expected_mix)."""
    sd = np.sqrt(1 + READER_SD ** 2)  # of s + reader noise
    mu, gap = np.zeros((len(CONDITIONS), len(LEVELS))), np.zeros(len(CONDITIONS))
    for i, c in enumerate(CONDITIONS):
        group = GROUP_OF[c]
        m = -sd * norm.ppf(np.asarray(NORMAL_FRAC[group]))
        severe = lambda g: float(np.mean(norm.sf((g - m) / sd))) - SEVERE_FRAC[group]
        mu[i], gap[i] = m, brentq(severe, 1e-3, 10.0)
    return mu, gap


def _latent(rng: np.random.Generator, mu: np.ndarray) -> np.ndarray:
    d = rng.standard_normal()
    e_level = rng.standard_normal(len(LEVELS))
    e_cell = rng.standard_normal((len(CONDITIONS), len(LEVELS)))
    return mu + STUDY_SD * d + LEVEL_SD * e_level[None, :] + CELL_SD * e_cell


def narrowing_of(latent: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """Narrowing fraction of each cell: piecewise linear and increasing in ``s`` through
    NARROWING_KNOTS (per condition: its own GAP), clipped to [0, 0.95]."""
    out = np.empty_like(latent, dtype=float)
    for i in range(latent.shape[0]):
        xs = [{"gap": gap[i], "gap+1.5": gap[i] + 1.5}.get(x, x) for x, _ in NARROWING_KNOTS]
        ys = [y for _, y in NARROWING_KNOTS]
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        out[i] = np.interp(latent[i], xs, ys, left=0.0, right=np.nan)
        over = latent[i] > xs[-1]
        out[i][over] = ys[-1] + slope * (latent[i][over] - xs[-1])
    return np.clip(out, 0.0, 0.95)


def posterior(latent: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """P(grade | s) under the reader model: (..., 3) for latent (5, L) and gap (5,)."""
    g = np.asarray(gap, float).reshape(-1, *([1] * (latent.ndim - 1)))
    p_normal = norm.cdf(-latent / READER_SD)
    p_severe = norm.sf((g - latent) / READER_SD)
    return np.stack([p_normal, 1.0 - p_normal - p_severe, p_severe], axis=-1).clip(0.0, 1.0)


def sample_cells(rng: np.random.Generator, model: str = "realistic") -> Cells:
    """Draw one study's cells under ``model`` (see the module docstring)."""
    if model == "realistic":
        mu, gap = realistic_params()
        s = _latent(rng, mu)
        seen = s + READER_SD * rng.standard_normal(s.shape)
        grade = (seen >= 0).astype(np.int8) + (seen >= gap[:, None]).astype(np.int8)
        return Cells(grade, narrowing_of(s, gap), s, posterior(s, gap))
    if model == "clean":
        mu = np.array([[CLEAN_CONDITION_SHIFT[c] + CLEAN_LEVEL_SHIFT[lv] for lv in LEVELS] for c in CONDITIONS])
        s = _latent(rng, mu)
        grade = (s >= 0).astype(np.int8) + (s >= CLEAN_GAP).astype(np.int8)
        lo = np.array([r[0] for r in CLEAN_NARROWING])[grade]
        hi = np.array([r[1] for r in CLEAN_NARROWING])[grade]
        nar = np.clip(lo + rng.random(grade.shape) * (hi - lo)
                      + CLEAN_NARROWING_JITTER_SD * rng.standard_normal(grade.shape), 0.0, 0.95)
        return Cells(grade, nar, s, np.eye(3)[grade])
    raise ValueError(f"label model must be one of {LABEL_MODELS}, got {model!r}")


def sample_blanks(rng: np.random.Generator, model: str = "realistic") -> np.ndarray:
    """(5, 5) bool: which cells are left blank in the label file."""
    rates = BLANK_P if model == "realistic" else CLEAN_BLANK_P
    p = np.full((len(CONDITIONS), len(LEVELS)), rates["other"])
    for c in (LEFT_SS, RIGHT_SS):
        p[CONDITIONS.index(c), 0] = rates["subarticular_l1_l2"]
        p[CONDITIONS.index(c), 1] = rates["subarticular_l2_l3"]
    return rng.random(p.shape) < p


def oracle_submission(posterior_cells: np.ndarray) -> np.ndarray:
    """The best submission of cells whose posterior is known: under the metric's row weights w (1/2/4
    by the true grade) the expected loss of a row is minimised by p_k proportional to w_k * pi_k."""
    tilted = np.asarray(posterior_cells, float) * np.asarray(SEVERITY_WEIGHTS)
    return tilted / tilted.sum(axis=-1, keepdims=True)


def expected_mix(model: str = "realistic") -> dict:
    """Exact expected grade fractions (ignoring blanks): per cell, per condition, per level, overall."""
    p = np.zeros((len(CONDITIONS), len(LEVELS), 3))
    if model == "realistic":
        mu, gap = realistic_params()
        sd = np.sqrt(1 + READER_SD ** 2)
        a, b = norm.cdf(-mu / sd), norm.cdf((gap[:, None] - mu) / sd)
    else:
        mu = np.array([[CLEAN_CONDITION_SHIFT[c] + CLEAN_LEVEL_SHIFT[lv] for lv in LEVELS] for c in CONDITIONS])
        a, b = norm.cdf(-mu), norm.cdf(CLEAN_GAP - mu)
    p[..., 0], p[..., 1], p[..., 2] = a, b - a, 1 - b
    groups = {g: [i for i, c in enumerate(CONDITIONS) if GROUP_OF[c] == g] for g in NORMAL_FRAC}
    return {"cell": p, "overall": p.mean(axis=(0, 1)),
            "condition": {c: p[i].mean(axis=0) for i, c in enumerate(CONDITIONS)},
            "group": {g: p[idx].mean(axis=(0, 1)) for g, idx in groups.items()},
            "level": {lv: p[:, j].mean(axis=0) for j, lv in enumerate(LEVELS)}}
