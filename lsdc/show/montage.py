"""Pure image composition for `lsdc show`: uint8 arrays in, an RGB canvas plus text out, rendered to a
PNG (matplotlib, Agg) of exactly the canvas's size in pixels.

Nothing here reads a store or a DICOM file. Layout (all sizes in pixels, see :func:`grid_size`):

* a header line of ``HEADER_PX`` across the top, then tiles in a grid of ``cols`` columns, ``GAP``
  between tiles and around the grid;
* a **sample tile** (:func:`sample_tile_size`): the centre slice of a stored crop, ``CENTRE_PX``
  square, with the crop the model sees (out_px of store_px) framed and its centre (the labelled
  point) marked; beside it two columns of thumbnails, the K slices before the centre (left column,
  top to bottom -K..-1) and the K after (right column, +1..+K), each ``CENTRE_PX // K`` square; below,
  ``CAPTION_LINES`` caption lines. Slices are numbered from the labelled slice; a tile may carry a tag
  (top right) and its mark elsewhere than the centre (`lsdc show --augment`: one row per sample, its
  eval crop then its augmented draws, each draw's mark where the warp moved the labelled point);
* a **keypoint panel** (:func:`panel_tile_size`): one whole slice fitted (aspect kept) into
  ``PANEL_PX`` square, keypoints drawn as rings with their names, caption lines below.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CENTRE_PX = 192
PANEL_PX = 360
GAP = 8
STRIP_GAP = 4  # between the centre slice and its thumbnails
HEADER_PX = 24
LINE_PX = 15
CAPTION_LINES = 2
CAPTION_PAD = 3
FONT_PT = 8
DPI = 100
BACKGROUND = (24, 24, 24)
TEXT = "#f0f0f0"
MUTED = "#a0a0a0"
FRAME = (230, 200, 40)  # the model's crop inside the stored field of view
CROSS = (255, 40, 40)  # the labelled point (crop centre)
CHAR_PX = 5.6  # mean width of a FONT_PT character, for trimming captions to their tile


@dataclass
class Text:
    x: float  # pixels from the left
    y: float  # pixels from the top
    s: str
    color: str = TEXT
    size: float = FONT_PT
    ha: str = "left"
    va: str = "top"
    bold: bool = False
    outline: bool = False  # a dark halo, for text drawn over an image


@dataclass
class Canvas:
    rgb: np.ndarray  # uint8 [H, W, 3]
    texts: list = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.rgb.shape[1], self.rgb.shape[0]


@dataclass
class Mark:
    """A keypoint to draw on a panel, in the image's own pixel coordinates."""

    x: float
    y: float
    label: str
    color: tuple  # RGB 0..255


# -- sizes ---------------------------------------------------------------------------------------
def caption_px(lines: int = CAPTION_LINES) -> int:
    return CAPTION_PAD + lines * LINE_PX


def thumb_px(neighbours: int) -> int:
    return CENTRE_PX // neighbours if neighbours > 0 else 0


def sample_tile_size(neighbours: int) -> tuple[int, int]:
    """(width, height) of one sample tile showing ``neighbours`` slices on each side of the centre."""
    strip = STRIP_GAP + 2 * thumb_px(neighbours) if neighbours > 0 else 0
    return CENTRE_PX + strip, CENTRE_PX + caption_px()


def panel_tile_size() -> tuple[int, int]:
    return PANEL_PX, PANEL_PX + caption_px()


def grid_size(n: int, tile: tuple[int, int], cols: int) -> tuple[int, int]:
    """(width, height) of a montage of ``n`` tiles of ``tile`` (w, h) in ``min(cols, n)`` columns."""
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    return cols * tile[0] + (cols + 1) * GAP, HEADER_PX + rows * tile[1] + (rows + 1) * GAP


def _origin(i: int, tile: tuple[int, int], cols: int) -> tuple[int, int]:
    """(x, y) of tile i's top-left corner."""
    r, c = divmod(i, cols)
    return GAP + c * (tile[0] + GAP), HEADER_PX + GAP + r * (tile[1] + GAP)


# -- pixels --------------------------------------------------------------------------------------
def resize_nearest(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """``img`` [H0, W0, ...] resampled to [h, w, ...] by nearest pixel (no smoothing: what is stored)."""
    rows = np.minimum(((np.arange(h) + 0.5) * img.shape[0] / h).astype(np.int64), img.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * img.shape[1] / w).astype(np.int64), img.shape[1] - 1)
    return img[rows][:, cols]


def grey_rgb(img: np.ndarray) -> np.ndarray:
    """uint8 [H, W] -> uint8 [H, W, 3]."""
    return np.repeat(np.asarray(img, np.uint8)[..., None], 3, axis=-1)


def window_uint8(img: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Any-valued image -> uint8 by its own percentile window (for whole DICOM slices)."""
    img = np.asarray(img, np.float32)
    lo, hi = np.percentile(img, [low_pct, high_pct])
    if hi <= lo:
        return np.zeros(img.shape, np.uint8)
    return np.clip((img - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def draw_rect(rgb: np.ndarray, x0: int, y0: int, x1: int, y1: int, color, width: int = 1) -> None:
    """Outline of the box [x0, x1) x [y0, y1), clipped to the image."""
    h, w = rgb.shape[:2]
    x0, x1, y0, y1 = max(x0, 0), min(x1, w), max(y0, 0), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return
    rgb[y0:y0 + width, x0:x1] = color
    rgb[max(y1 - width, y0):y1, x0:x1] = color
    rgb[y0:y1, x0:x0 + width] = color
    rgb[y0:y1, max(x1 - width, x0):x1] = color


def draw_cross(rgb: np.ndarray, x: int, y: int, color, arm: int = 6, hole: int = 2) -> None:
    """A cross with an open centre (the pixel under it stays visible)."""
    h, w = rgb.shape[:2]
    for d in range(hole + 1, arm + 1):
        for xx, yy in ((x - d, y), (x + d, y), (x, y - d), (x, y + d)):
            if 0 <= xx < w and 0 <= yy < h:
                rgb[yy, xx] = color


def draw_ring(rgb: np.ndarray, x: float, y: float, color, radius: float = 6.0, width: float = 1.6) -> None:
    h, w = rgb.shape[:2]
    r0 = int(radius + width + 1)
    ys, xs = np.mgrid[max(int(y) - r0, 0):min(int(y) + r0 + 1, h), max(int(x) - r0, 0):min(int(x) + r0 + 1, w)]
    d = np.hypot(xs - x, ys - y)
    sel = np.abs(d - radius) <= width / 2
    rgb[ys[sel], xs[sel]] = color


def _trim(s: str, width_px: float) -> str:
    n = max(int(width_px / CHAR_PX), 4)
    return s if len(s) <= n else s[:n - 1] + "…"


def _slice_name(offset: int) -> str:
    """A slice's number counted from the labelled slice: 0, -1, +2."""
    return f"{offset:+d}" if offset else "0"


def _blank(size: tuple[int, int]) -> np.ndarray:
    w, h = size
    out = np.empty((h, w, 3), np.uint8)
    out[...] = BACKGROUND
    return out


# -- montages ------------------------------------------------------------------------------------
def sample_montage(stacks: list, captions: list, neighbours: int, cols: int, title: str,
                   crop_frac: float = 1.0, caption_colors: list | None = None, marks: list | None = None,
                   tags: list | None = None, offsets: list | None = None) -> Canvas:
    """Tiles of stored samples.

    ``stacks``: uint8 [S, H, W] per sample (the centre slice is S // 2); ``captions``: lines per
    sample (at most CAPTION_LINES); ``neighbours``: K thumbnails on each side (at most S // 2);
    ``crop_frac``: out_px / store_px, the part of the stored field the model sees (framed);
    ``caption_colors``: a colour per sample for its last caption line (e.g. by severity);
    ``marks``: per sample None (the image centre) or (x, y) of the labelled point in the slice's own
    pixel-centre coordinates (pixel j spans [j, j+1)), e.g. where an augmentation warp moved it;
    ``tags``: per sample a short name drawn in the centre slice's top-right corner (e.g. "draw 2");
    ``offsets``: per sample the stored-slice offset of its centre slice (a shifted slice window), added
    to every slice's number so the numbers always count from the labelled slice.
    """
    if not stacks:
        raise ValueError("no samples to draw")
    tile = sample_tile_size(neighbours)
    cols = max(1, min(cols, len(stacks)))
    canvas = Canvas(_blank(grid_size(len(stacks), tile, cols)), [Text(GAP, 4, title, bold=True, size=FONT_PT + 1)])
    for i, (stack, lines) in enumerate(zip(stacks, captions)):
        x, y = _origin(i, tile, cols)
        _sample_tile(canvas, x, y, np.asarray(stack, np.uint8), neighbours, crop_frac,
                     marks[i] if marks else None, offsets[i] if offsets else 0)
        if tags and tags[i]:
            canvas.texts.append(Text(x + CENTRE_PX - 3, y + 2, tags[i], color=TEXT, size=FONT_PT - 1, ha="right",
                                     outline=True))
        for li, line in enumerate(lines[:CAPTION_LINES]):
            color = caption_colors[i] if caption_colors and li == len(lines[:CAPTION_LINES]) - 1 else TEXT
            canvas.texts.append(Text(x, y + CENTRE_PX + CAPTION_PAD + li * LINE_PX, _trim(line, tile[0]), color=color))
    return canvas


def _sample_tile(canvas: Canvas, x: int, y: int, stack: np.ndarray, neighbours: int, crop_frac: float,
                 mark: tuple | None, offset: int) -> None:
    """One sample's slices at (x, y): the centre slice large (crop framed, labelled point crossed), its
    ``neighbours`` on each side as thumbnails; each slice numbered from the labelled slice."""
    c = stack.shape[0] // 2
    k = min(neighbours, c)
    t = thumb_px(neighbours)
    big = grey_rgb(resize_nearest(stack[c], CENTRE_PX, CENTRE_PX))
    if crop_frac < 1.0:
        side = int(round(CENTRE_PX * crop_frac))
        o = (CENTRE_PX - side) // 2
        draw_rect(big, o, o, o + side, o + side, FRAME)
    if mark is None:
        draw_cross(big, CENTRE_PX // 2, CENTRE_PX // 2, CROSS)
    else:  # a continuous point scales with the image: W / 2 lands on CENTRE_PX // 2 like the default
        draw_cross(big, int(mark[0] * CENTRE_PX / stack.shape[2]), int(mark[1] * CENTRE_PX / stack.shape[1]), CROSS)
    canvas.rgb[y:y + CENTRE_PX, x:x + CENTRE_PX] = big
    canvas.texts.append(Text(x + 3, y + 2, _slice_name(offset), color="#ffff80", size=FONT_PT - 1,
                             outline=True))
    for j in range(1, k + 1):
        for col, off in ((0, -j), (1, j)):
            row = (k - j) if off < 0 else (j - 1)  # left column -K..-1 top to bottom, right +1..+K
            tx = x + CENTRE_PX + STRIP_GAP + col * t
            ty = y + row * t
            canvas.rgb[ty:ty + t, tx:tx + t] = grey_rgb(resize_nearest(stack[c + off], t, t))
            draw_rect(canvas.rgb, tx, ty, tx + t, ty + t, BACKGROUND)
            canvas.texts.append(Text(tx + 2, ty + 1, _slice_name(offset + off), color="#ffff80", size=FONT_PT - 2,
                                     outline=True))


def panel_montage(images: list, marks: list, captions: list, cols: int, title: str) -> Canvas:
    """One panel per slice: ``images`` uint8 [H, W] (any size, fitted with aspect kept), ``marks``
    a list of :class:`Mark` per image (image pixel coordinates), ``captions`` lines per image."""
    if not images:
        raise ValueError("no panels to draw")
    tile = panel_tile_size()
    cols = max(1, min(cols, len(images)))
    canvas = Canvas(_blank(grid_size(len(images), tile, cols)), [Text(GAP, 4, title, bold=True, size=FONT_PT + 1)])
    for i, (img, pts, lines) in enumerate(zip(images, marks, captions)):
        img = np.asarray(img, np.uint8)
        scale = PANEL_PX / max(img.shape)
        h, w = max(1, int(round(img.shape[0] * scale))), max(1, int(round(img.shape[1] * scale)))
        ox, oy = (PANEL_PX - w) // 2, (PANEL_PX - h) // 2
        panel = _blank((PANEL_PX, PANEL_PX))
        panel[oy:oy + h, ox:ox + w] = grey_rgb(resize_nearest(img, h, w))
        x, y = _origin(i, tile, cols)
        for m in pts:
            px = ox + (m.x + 0.5) * w / img.shape[1] - 0.5
            py = oy + (m.y + 0.5) * h / img.shape[0] - 0.5
            draw_ring(panel, px, py, m.color)
            hexc = "#%02x%02x%02x" % tuple(int(v) for v in m.color)
            right = px > PANEL_PX - 16 - len(m.label) * CHAR_PX  # no room on the right: label on the left
            canvas.texts.append(Text(x + px + (-10 if right else 10), y + py, m.label, color=hexc, size=FONT_PT,
                                     ha="right" if right else "left", va="center", outline=True))
        canvas.rgb[y:y + PANEL_PX, x:x + PANEL_PX] = panel
        for li, line in enumerate(lines[:CAPTION_LINES]):
            canvas.texts.append(Text(x, y + PANEL_PX + CAPTION_PAD + li * LINE_PX, _trim(line, tile[0]),
                                     color=TEXT if li == 0 else MUTED))
    return canvas


def render_png(canvas: Canvas, path, dpi: int = DPI) -> Path:
    """Write the canvas and its text as a PNG of exactly ``canvas.size`` pixels (Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    w, h = canvas.size
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    from matplotlib import patheffects
    halo = [patheffects.withStroke(linewidth=2.2, foreground="black")]
    fig.figimage(canvas.rgb, 0, 0, origin="upper")
    for t in canvas.texts:
        fig.text(t.x / w, 1 - t.y / h, t.s, color=t.color, fontsize=t.size, ha=t.ha, va=t.va,
                 fontweight="bold" if t.bold else "normal", path_effects=halo if t.outline else None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png", facecolor="black")
    return path
