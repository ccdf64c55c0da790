"""A parametric lumbar spine in DICOM patient coordinates (LPS, mm): anatomy, landmarks, severities.

``make_study`` draws one patient: a lordotic column T12..L5 + sacrum (vertebral bodies, discs,
pedicles, laminae, spinous and transverse processes, facets), the CSF-filled canal with epidural fat
and the conus, and at each disc level the left/right neural foramina (fat + nerve root) and lateral
recesses. Severity lives in the anatomy only: at each level the canal is indented at the disc (bulge
from the front, ligamentum flavum from the back), a foramen loses its fat to a disc-osteophyte (front)
and facet (back) pair, a lateral recess is filled from behind-laterally; each by the cell's
narrowing fraction (a smooth function of its latent severity: ``labels.narrowing_of``).

The anatomy is a list of soft-edged solid primitives painted in order (later ones win), plus an
analytic body background (skin fat, abdomen, psoas, paraspinal muscles) for everything else; see
``render.py``. Landmarks (the ground truth of the coordinate file) are the planted structure centres:
canal centre at the disc (spinal), foramen centre (foraminal), lateral recess centre (subarticular).
Patient left is +x, posterior +y, superior +z.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.schema import CONDITIONS, LEFT_NFN, LEFT_SS, LEVELS, RIGHT_NFN, RIGHT_SS, SPINAL
from . import labels as lab

SEQUENCES = ("T1", "T2", "STIR")
#: relative intensity per sequence (T1, T2, STIR); jittered +-8 % per study
TISSUES = {
    "fat": (1.00, 0.60, 0.06), "muscle": (0.32, 0.20, 0.22), "soft": (0.42, 0.30, 0.32),
    "cortex": (0.05, 0.04, 0.04), "marrow": (0.66, 0.42, 0.16), "post_bone": (0.56, 0.36, 0.14),
    "annulus": (0.26, 0.16, 0.18), "nucleus": (0.30, 0.78, 0.82), "csf": (0.10, 1.00, 1.00),
    "nerve": (0.38, 0.38, 0.45), "ligament": (0.10, 0.09, 0.10),
}
CYL = 0  # ``q`` of an elliptic cylinder with flat ends (canal segments)


@dataclass(frozen=True)
class Primitive:
    """A soft-edged solid: |l0/h0|^p + |l1/h1|^p mixed with |l2/h2| by exponent q (or CYL)."""
    tissue: str
    centre: np.ndarray  # (3,) patient mm
    axes: np.ndarray    # (3, 3) rows: unit local axes in patient coordinates
    half: np.ndarray    # (3,) half sizes along those axes, mm
    p: int = 2
    q: int = 2
    intensity: tuple | None = None  # overrides TISSUES[tissue] (per-disc nucleus signal)


@dataclass
class StudyAnatomy:
    """One synthetic patient. ``severity``/``narrowing`` are (5 conditions, 5 levels) in schema order."""
    severity: np.ndarray
    narrowing: np.ndarray
    origin: np.ndarray          # patient position of the L3 body centre
    rotation: np.ndarray        # local spine frame -> patient
    size: float
    landmarks: dict             # (condition, level) -> (3,) mm
    disc_centres: dict          # level -> (3,) mm
    disc_axes: dict             # level -> (3, 3) rows (lateral, posterior, superior)
    primitives: list
    tissue: dict                # tissue -> np.ndarray(3) intensities for this study
    body: dict = field(default_factory=dict)  # background parameters
    latent: np.ndarray | None = None     # (5, 5) latent severity (labels.py), when drawn
    posterior: np.ndarray | None = None  # (5, 5, 3) P(grade | latent), when drawn

    def landmark(self, condition: str, level: str) -> np.ndarray:
        return self.landmarks[(condition, level)].copy()

    def grade(self, condition: str, level: str) -> int:
        return int(self.severity[CONDITIONS.index(condition), LEVELS.index(level)])

    def background(self, points: np.ndarray, sequence: str) -> np.ndarray:
        return background(self.body, self.tissue, points, sequence)


def _rot(axis: int, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def _frame(phi: float) -> np.ndarray:
    """Rows (lateral +x, posterior, superior) of a segment tilted by phi (rad) from +z towards +y."""
    return np.array([[1.0, 0, 0], [0, np.cos(phi), -np.sin(phi)], [0, np.sin(phi), np.cos(phi)]])


def make_study(rng, severity=None, narrowing=None, label_model: str = "realistic") -> StudyAnatomy:
    """Draw one patient from ``rng`` (a Generator or a seed); its cells (grades, narrowing, latent
    severity, posterior) drawn under ``label_model`` unless ``severity`` and ``narrowing`` are given."""
    rng = np.random.default_rng(rng)
    latent = posterior = None
    if severity is None or narrowing is None:
        cells = lab.sample_cells(rng, label_model)
        latent, posterior = cells.latent, cells.posterior
    sev = cells.grade if severity is None else np.asarray(severity, dtype=np.int8)
    nar = cells.narrowing if narrowing is None else np.asarray(narrowing, dtype=float)
    ch = _draw_chain(rng, nar)
    origin = np.array([rng.uniform(-12, 12), rng.uniform(-12, 12), rng.uniform(-15, 15)])
    R = _rot(2, rng.uniform(-4, 4)) @ _rot(1, rng.uniform(-4, 4)) @ _rot(0, rng.uniform(-2, 2))
    shift = ch["bodies"][3][0].copy()

    def world(p):
        return origin + R @ (np.asarray(p, dtype=float) - shift)

    local, local_marks = _primitives(ch, nar, rng)
    prims = [Primitive(t, world(c), _frame(ph) @ R.T, np.asarray(h, float), p, q, i)
             for t, c, ph, h, p, q, i in local]
    marks = {k: world(v) for k, v in local_marks.items()}
    discs = ch["discs"][1:]
    tissue = {t: np.asarray(v) * rng.uniform(0.92, 1.08, 3) for t, v in TISSUES.items()}
    s = ch["s"]
    centres = np.array([world(c) for c, _ in ch["bodies"] + [ch["sacrum"]]])
    order = np.argsort(centres[:, 2])
    zs = np.arange(centres[:, 2].min() - 400, centres[:, 2].max() + 400)
    l3 = world(shift)
    body = {"spine_z": centres[order, 2], "table_z0": zs[0],
            "table_x": np.interp(zs, centres[order, 2], centres[order, 0]).astype(np.float32),
            "table_y": np.interp(zs, centres[order, 2], centres[order, 1]).astype(np.float32),
            "centre_x": l3[0], "semi_x": s * rng.uniform(140, 170), "fat_mm": rng.uniform(8, 28), "s": s}
    back, front = s * rng.uniform(90, 110), s * rng.uniform(120, 170)  # skin behind / in front of L3
    body.update(centre_y=l3[1] + (back - front) / 2, semi_y=(back + front) / 2)
    return StudyAnatomy(sev, nar, origin, R, s, marks,
                        {lv: world(discs[j][0]) for j, lv in enumerate(LEVELS)},
                        {lv: _frame(discs[j][1]) @ R.T for j, lv in enumerate(LEVELS)},
                        prims, tissue, body, latent, posterior)


def _draw_chain(rng, nar) -> dict:
    """Sizes and the lordotic chain of bodies/discs in the local frame, walked up from the S1 endplate."""
    s = rng.uniform(0.88, 1.12)
    H = s * rng.uniform(25.5, 29.5, 6)                       # bodies T12, L1..L5
    D = s * rng.uniform(28, 33) * (1 + 0.02 * np.arange(6))  # AP depth
    W = s * rng.uniform(38, 45) * (1 + 0.03 * np.arange(6))  # width
    h = s * (np.array([7.5, 8.5, 9.5, 10.5, 11.5, 11.0]) + rng.uniform(-1, 1, 6))  # T12/L1 .. L5/S1
    h[1:] -= 2.0 * nar.mean(axis=0)  # degenerate discs lose height
    wedge = np.radians(rng.uniform(30, 55)) * np.array([0.11, 0.13, 0.18, 0.26, 0.32])
    wedge = np.concatenate([[np.radians(-2.0)], wedge])
    phi = -np.radians(rng.uniform(22, 36))  # sacral slope
    end = np.zeros(3)
    sacrum = (end - _frame(phi)[2] * 15 * s, phi)
    discs, bodies = [None] * 6, [None] * 6
    for k in range(5, -1, -1):
        pd = phi + wedge[k] / 2
        discs[k] = (end + _frame(pd)[2] * h[k] / 2, pd)
        end = end + _frame(pd)[2] * h[k]
        phi = phi + wedge[k]
        bodies[k] = (end + _frame(phi)[2] * H[k] / 2, phi)
        end = end + _frame(phi)[2] * H[k]
    return {"s": s, "H": H, "D": D, "W": W, "h": h, "discs": discs, "bodies": bodies, "sacrum": sacrum,
            "r_lat": s * rng.uniform(8, 10), "r_ap": s * rng.uniform(6, 8), "gap": 1.5 * s}


def _primitives(ch, nar, rng):
    """Local-frame primitives (tissue, centre, phi, half, p, q, intensity) in paint order + landmarks."""
    nar6 = np.hstack([np.full((len(CONDITIONS), 1), 0.05), nar])  # + T12/L1, never labelled
    disc_d = np.append((ch["D"][:-1] + ch["D"][1:]) / 2, ch["D"][-1])
    out, marks = [], {}

    def add(tissue, c, ph, half, p=2, q=2, intensity=None):
        out.append((tissue, c, ph, half, p, q, intensity))

    foramina = _posterior_elements(ch, disc_d, add)
    _discs_and_bodies(ch, disc_d, nar6, rng, add)
    cc = _canal(ch, disc_d, add)
    _recesses_and_canal_indents(ch, nar6, cc, add, marks)
    _foramina(ch, nar6, foramina, add, marks)
    return out, marks


_FORAMEN_HALF = np.array([5.0, 4.5, 8.5])  # foramen half sizes (lateral, AP, SI) per unit of scale


def _posterior_elements(ch, disc_d, add) -> list:
    """1. posterior elements of each body, sacral alae; facets at each disc. Returns the foramina."""
    s, H, D, gap, r_lat, r_ap = ch["s"], ch["H"], ch["D"], ch["gap"], ch["r_lat"], ch["r_ap"]
    sac_c, sac_phi = ch["sacrum"]
    for k, (c, ph) in enumerate(ch["bodies"]):
        f, co = _frame(ph), D[k] / 2 + gap + r_ap
        for sd in (1, -1):
            add("post_bone", c + sd * (r_lat + 5 * s) * f[0] + (D[k] / 2 + co) / 2 * f[1] + 3 * s * f[2],
                ph, (4.5 * s, (co - D[k] / 2) / 2 + 2, 7.5 * s), q=4)
            add("post_bone", c + sd * 30 * s * f[0] + (D[k] / 2 + 6 * s) * f[1], ph, (13 * s, 4 * s, 5 * s))
        add("post_bone", c + (co + r_ap + 3 * s) * f[1] - 3 * s * f[2], ph, (r_lat + 7 * s, 3 * s, H[k] / 2 - 1), 4, 4)
        add("post_bone", c + (co + r_ap + 21 * s) * f[1] - 7 * s * f[2], ph, (3.5 * s, 17 * s, 9 * s), q=4)
    fs = _frame(sac_phi)
    add("post_bone", sac_c - 6 * s * fs[2] + 4 * s * fs[1], sac_phi, (52 * s, D[-1] / 2, 18 * s), 4, 2)
    add("post_bone", sac_c + (D[-1] / 2 + gap + 2 * r_ap + 3 * s) * fs[1], sac_phi,
        (r_lat + 8 * s, 4 * s, 22 * s), 4, 4)
    fh = _FORAMEN_HALF * s
    foramina = []
    for k, (c, ph) in enumerate(ch["discs"]):
        f = _frame(ph)
        for sd, cond in ((1, LEFT_NFN), (-1, RIGHT_NFN)):
            fc = c + sd * (r_lat + 8 * s) * f[0] + (disc_d[k] / 2 + 1 + fh[1]) * f[1] + 3 * s * f[2]
            add("post_bone", fc + (fh[1] + 6 * s) * f[1] - sd * 1.0 * f[0], ph, (6 * s, 6 * s, 9 * s))
            foramina.append((k, ph, sd, cond, fc))
    return foramina


def _discs_and_bodies(ch, disc_d, nar6, rng, add) -> None:
    """2. discs, then bodies (S1 wide, S2 bent back) painted over the disc margins."""
    s, H, D, W, h = ch["s"], ch["H"], ch["D"], ch["W"], ch["h"]
    sac_c, sac_phi = ch["sacrum"]
    fs = _frame(sac_phi)
    Wd = np.append((W[:-1] + W[1:]) / 2, W[-1])
    for k, (c, ph) in enumerate(ch["discs"]):
        t2 = float(np.clip(rng.uniform(0.62, 0.86) - 0.35 * nar6[:, k].mean(), 0.3, 0.9))
        add("annulus", c, ph, (Wd[k] / 2, disc_d[k] / 2 + 0.5 * s, h[k] / 2 + 1.0), q=4)
        add("nucleus", c + 1.0 * _frame(ph)[1], ph, (Wd[k] * 0.3, disc_d[k] * 0.28, h[k] * 0.3),
            intensity=(TISSUES["nucleus"][0], t2, t2 * 1.05))
    s2_phi = sac_phi - np.radians(25)
    s2_c = sac_c - fs[2] * 15 * s - _frame(s2_phi)[2] * 15 * s
    for c, ph, hh, dd, ww in [(c, ph, H[k], D[k], W[k]) for k, (c, ph) in enumerate(ch["bodies"])] + [
            (sac_c, sac_phi, 30 * s, D[-1], W[-1] * 1.05), (s2_c, s2_phi, 28 * s, D[-1] * 0.8, W[-1] * 0.85)]:
        add("cortex", c, ph, (ww / 2, dd / 2, hh / 2), q=6)
        add("marrow", c, ph, (ww / 2 - 1.3, dd / 2 - 1.3, hh / 2 - 1.0), q=6)


def _canal(ch, disc_d, add) -> list:
    """3. the canal: epidural fat sleeve, CSF tube, conus. Returns its centre points (point, scale)
    from above T12 into the sacrum."""
    s, D, gap, r_lat, r_ap = ch["s"], ch["D"], ch["gap"], ch["r_lat"], ch["r_ap"]
    bodies, discs = ch["bodies"], ch["discs"]
    sac_c, sac_phi = ch["sacrum"]
    fs = _frame(sac_phi)
    pts = [(bodies[0][0] + _frame(bodies[0][1])[2] * 30 * s, bodies[0][1], D[0], 1.0)]
    for k in range(6):
        pts += [(bodies[k][0], bodies[k][1], D[k], 1.0), (discs[k][0], discs[k][1], disc_d[k], 1.0)]
    pts += [(sac_c, sac_phi, D[-1], 0.85), (sac_c - fs[2] * 22 * s, sac_phi, D[-1], 0.55)]
    cc = [(p + _frame(ph)[1] * (dd / 2 + gap + r_ap * sc), sc) for p, ph, dd, sc in pts]
    for tissue, grow, back in (("fat", 2.0 * s, 1.0 * s), ("csf", 0.0, 0.0)):
        for (a, sa), (b, sb) in zip(cc[:-1], cc[1:]):
            sc = (sa + sb) / 2
            add(tissue, *_segment(a, b, (r_lat * sc + grow, r_ap * sc + grow), back))
    add("nerve", *_segment(cc[0][0], cc[2][0], (4.5 * s, 3.5 * s), 0.0))
    add("nerve", *_segment(cc[2][0], cc[2][0] + (cc[3][0] - cc[2][0]) * 0.3, (4.5 * s, 3.5 * s), 0.0)[:3], q=2)
    return cc


def _recesses_and_canal_indents(ch, nar6, cc, add, marks) -> None:
    """4. lateral recesses (CSF) and their filling from behind; the canal indented at each disc."""
    s, h, r_lat, r_ap = ch["s"], ch["h"], ch["r_lat"], ch["r_ap"]
    ci = {c: i for i, c in enumerate(CONDITIONS)}
    for k, (c, ph) in enumerate(ch["discs"]):
        f = _frame(ph)
        cd = cc[2 + 2 * k][0]
        for sd, cond in ((1, LEFT_SS), (-1, RIGHT_SS)):
            rc = cd + sd * 0.9 * r_lat * f[0] - 0.45 * r_ap * f[1]
            add("csf", rc, ph, (3.5 * s, 3.0 * s, 7.0 * s))
            n = nar6[ci[cond], k]
            direction = (0.3 * sd * f[0] + 0.95 * f[1]) / np.hypot(0.3, 0.95)
            add("ligament", rc + direction * (3.25 * s * (1 - 2 * n) + 4.5 * s), ph, (4.5 * s, 4.5 * s, 7 * s))
            if k > 0:
                marks[(cond, LEVELS[k - 1])] = rc
        n = nar6[ci[SPINAL], k]
        add("annulus", cd - f[1] * (r_ap * (1 - n) + 5 * s), ph, (0.85 * r_lat, 5 * s, h[k] / 2 + 3 * s))
        add("ligament", cd + f[1] * (r_ap * (1 - n) + 4 * s), ph, (0.85 * r_lat, 4 * s, 6 * s))
        if k > 0:
            marks[(SPINAL, LEVELS[k - 1])] = cd


def _foramina(ch, nar6, foramina, add, marks) -> None:
    """5. foramina last (lateral of everything above): fat, root, disc-osteophyte in front, facet behind."""
    s = ch["s"]
    fh = _FORAMEN_HALF * s
    ci = {c: i for i, c in enumerate(CONDITIONS)}
    for k, ph, sd, cond, fc in foramina:
        f = _frame(ph)
        n = nar6[ci[cond], k]
        add("fat", fc, ph, fh)
        add("nerve", fc + 3 * s * f[2] - 1.0 * f[1], ph, (4 * s, 2.3 * s, 2.3 * s))
        add("annulus", fc - (fh[1] * (1 - n) + 3 * s) * f[1], ph, (5.5 * s, 3 * s, 10 * s))
        add("post_bone", fc + (fh[1] * (1 - n) + 3.5 * s) * f[1], ph, (5.5 * s, 3.5 * s, 10 * s))
        if k > 0:
            marks[(cond, LEVELS[k - 1])] = fc


def _segment(a, b, radii, back):
    """(centre, phi, half, p, q) of an elliptic-cylinder canal piece from a to b, shifted back mm."""
    d = b - a
    length = float(np.linalg.norm(d))
    phi = float(np.arctan2(-d[1], -d[2]))  # superior direction is a - b
    centre = (a + b) / 2 + _frame(phi)[1] * back
    return centre, phi, (radii[0], radii[1], length / 2 + 1.5), 2, CYL


def background(body: dict, tissue: dict, points: np.ndarray, sequence: str) -> np.ndarray:
    """Body background at patient points (..., 3): skin fat ring, abdomen, psoas, paraspinal muscles."""
    k = SEQUENCES.index(sequence)
    f32 = np.float32
    x, y, z = (points[..., i].astype(f32) for i in range(3))
    # spine position along z from a 1 mm table (np.interp on every pixel is the slow part)
    zi = np.clip(np.rint(z - body["table_z0"]).astype(np.int32), 0, len(body["table_x"]) - 1)
    u = x - body["table_x"][zi]
    v = y - body["table_y"][zi]
    s, fat = body["s"], body["fat_mm"]
    vb = y - f32(body["centre_y"])
    outer = _soft_ellipse(x - f32(body["centre_x"]), vb, body["semi_x"], body["semi_y"], 2.0)
    inner = _soft_ellipse(x - f32(body["centre_x"]), vb, body["semi_x"] - fat, body["semi_y"] - fat, 2.0)
    t = tissue
    out = outer * f32(t["fat"][k]) + inner * f32(t["soft"][k] - t["fat"][k])
    # psoas grows towards the pelvis; paraspinals follow the spine's curve
    grow = np.clip((body["spine_z"][-1] - z) * f32(1 / 150.0), f32(0.3), f32(1.0))
    muscle = f32(t["muscle"][k])
    for sd in (1, -1):
        for mx, my, ax, ay, g in ((34 * s, -4 * s, 13 * s, 16 * s, grow), (30 * s, 60 * s, 26 * s, 34 * s, None)):
            du, dv = u - f32(sd * mx), v - f32(my)
            if g is not None:
                du, dv = du / g, dv / g
            m = _soft_ellipse(du, dv, ax, ay, 1.5) * inner
            out += m * (muscle - out)
    return out


def _soft_ellipse(dx, dy, ax, ay, edge_mm):
    f32 = np.float32
    rho = np.sqrt((dx * f32(1 / ax)) ** 2 + (dy * f32(1 / ay)) ** 2)
    rho -= f32(1)
    rho *= f32(-min(ax, ay) / edge_mm)
    rho += f32(0.5)
    return np.clip(rho, f32(0), f32(1), out=rho)
