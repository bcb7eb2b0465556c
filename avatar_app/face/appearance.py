"""What the followed face *looks* like, frame to frame: a cut to another person shows here even
where the landmarks barely move (two face-centred shots of people who sit alike, someone else
taking the webcam's place at the same distance).

A :class:`Look` is two cheap terms measured from one small patch of the frame, aligned on the
face's rigid landmarks (a similarity fit to the mesh's neutral face, so it does not depend on
where the face is, its size or its roll):

* **skin colour**: the mean CIE a*b* chroma at the face's skin mesh points (cheeks, forehead,
  nose; not the lips, eyes, brows or the outline, which may be hair or background).  Chroma
  rather than lightness: exposure and head turns change the lightness, much less the chroma;
* **layout**: a coarse grid of the patch's lightness, each frame normalised to zero mean and unit
  spread (so a change of exposure or gain is not a change of layout): where the brows, beard,
  glasses, hair line and shadows are.

Both terms use only what lies inside the frame in both faces compared, so a face partly out of
the frame is compared on its visible part.  Thresholds: :class:`LookThresholds`
(docs/MOTION_UNSEEN.md §8.2 has how they were chosen).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .mesh import REGION_SKIN, topology

GRID = 6  # layout cells a side
CELL = 6  # patch px a cell (patch: GRID * CELL px a side)
BOX = (-1.2, 1.2, -0.9, 1.5)  # the patch in the neutral face's units (IOD): x0, x1, y0, y1 (eyes at y = 0)


@dataclass(frozen=True)
class LookThresholds:
    """When the followed face's look changes too much from one frame to the next to be the same
    face moving: a cut (another person, another shot).

    Each term is counted in units of the largest change it showed over the stress drivers' own
    continuous clips (588 frame pairs, docs/MOTION_UNSEEN.md §8.2: skin chroma 1.5, layout 0.33);
    the look changed when the two add up to more than ``limit`` (the largest sum there: 1.39; over
    gaps of three frames 2.25). One term alone can make a cut (a new person under the same light
    with another face's layout; the same layout in another colour), and a big expression, which
    moves the layout but not the skin's colour, stays under it.

    Attributes:
        chroma: the unit of the skin's mean a*b* distance (CIE Lab, 8-bit scale).
        layout: the unit of the normalised lightness grids' RMS difference (spread units).
        limit: the sum, in those units, above which the look changed.
    """

    chroma: float = 1.5
    layout: float = 0.33
    limit: float = 4.0


@dataclass(frozen=True)
class Look:
    """One face's look (:func:`face_look`).

    Attributes:
        chroma: ``(N, 2) float32`` a*, b* at the skin points (N = the skin points' count).
        skin_ok: ``(N,) bool`` which skin points lie inside the frame.
        layout: ``(GRID * GRID,) float32`` mean lightness of each cell.
        layout_ok: ``(GRID * GRID,) bool`` which cells lie wholly inside the frame.
        whole: every skin point and cell inside the frame (the usual case, compared faster).
        chroma_mean: ``(2,)`` mean a*, b* of all skin points.
        layout_norm: ``(GRID * GRID,)`` the layout normalised over all its cells.
    """

    chroma: np.ndarray
    skin_ok: np.ndarray
    layout: np.ndarray
    layout_ok: np.ndarray
    whole: bool = False
    chroma_mean: np.ndarray | None = None
    layout_norm: np.ndarray | None = None


@lru_cache(maxsize=1)
def skin_points() -> np.ndarray:
    """Mesh points on skin: vertices of skin triangles only, off the outline and its next ring
    (those can be hair or background on a turned head), not on the lips, eyes or brows."""
    topo = topology()
    tri, region = topo.triangles, topo.triangle_region
    outline = set(topo.face_oval.tolist())
    edge = set(outline)
    for t in tri:
        if outline.intersection(t.tolist()):
            edge.update(t.tolist())
    features = set(np.concatenate([
        topo.lips_outer, topo.lips_inner_upper, topo.lips_inner_lower, topo.right_brow, topo.left_brow,
        topo.right_eye_upper, topo.right_eye_lower, topo.left_eye_upper, topo.left_eye_lower,
        tri[region != REGION_SKIN].ravel()]).tolist())
    return np.array(sorted(set(range(len(topo.neutral))) - edge - features), np.int64)


@lru_cache(maxsize=1)
def _neutral_rigid() -> tuple[np.ndarray, np.ndarray, float]:
    """The neutral face's rigid points (x, y), centred; their mean; their variance (summed)."""
    topo = topology()
    xy = topo.neutral[topo.rigid, :2].astype(np.float64)
    centred = xy - xy.mean(0)
    return centred, xy.mean(0), float((centred ** 2).sum())


@lru_cache(maxsize=1)
def _patch_geometry() -> tuple[np.ndarray, np.ndarray]:
    """``(patch px -> neutral units (2, 3), the cells' corners in patch px (GRID+1)² x 3 homogeneous)``."""
    side = GRID * CELL
    x0, x1, y0, y1 = BOX
    sx, sy = (x1 - x0) / side, (y1 - y0) / side
    to_neutral = np.array([[sx, 0, x0 + sx / 2], [0, sy, y0 + sy / 2]])
    edges = np.arange(GRID + 1) * CELL - 0.5
    u, v = np.meshgrid(edges, edges)
    return to_neutral, np.stack([u.ravel(), v.ravel(), np.ones(u.size)], 1)


def face_look(image: np.ndarray, points: np.ndarray) -> Look:
    """The look of the face at ``points`` (``(478, 2+)`` image px) in ``image`` (BGR uint8).

    A few tenths of a millisecond: one affine warp of a 36 × 36 patch and its Lab conversion."""
    side = GRID * CELL
    pts = np.asarray(points)
    rigid = pts[topology().rigid, :2].astype(np.float64)
    src, src_mean, src_var = _neutral_rigid()
    # similarity neutral -> image, closed form in 2-D: [[a, -b], [b, a]] (scale and rotation, no reflection); the
    # same fit as face.align.similarity_fit (equal to 1e-15 here), without its SVD: 37 us against 93 us a frame
    mean = rigid.mean(0)
    d = rigid - mean
    a = float((src * d).sum()) / src_var
    b = float((src[:, 0] * d[:, 1] - src[:, 1] * d[:, 0]).sum()) / src_var
    lin = np.array([[a, -b], [b, a]])
    t = mean - lin @ src_mean
    to_neutral, corners = _patch_geometry()
    to_image = np.hstack([lin @ to_neutral[:, :2], (lin @ to_neutral[:, 2] + t)[:, None]])
    patch = cv2.warpAffine(image, to_image.astype(np.float32), (side, side),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
    lab = cv2.cvtColor(patch, cv2.COLOR_BGR2LAB)
    h, w = image.shape[:2]
    # a cell counts when its four corners lie inside the frame
    xy = corners @ to_image.T
    inside = ((xy[:, 0] >= 0) & (xy[:, 0] <= w - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= h - 1)).reshape(GRID + 1, GRID + 1)
    layout_ok = (inside[:-1, :-1] & inside[1:, :-1] & inside[:-1, 1:] & inside[1:, 1:]).ravel()
    layout = cv2.resize(lab[..., 0], (GRID, GRID), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    # the skin points in patch px (image -> patch: the inverse affine)
    skin = pts[skin_points(), :2]
    to_patch = cv2.invertAffineTransform(to_image).astype(np.float32)
    uv = np.rint(skin @ to_patch[:, :2].T + to_patch[:, 2]).astype(np.int64)
    np.clip(uv, 0, side - 1, out=uv)
    skin_ok = (skin[:, 0] >= 0) & (skin[:, 0] <= w - 1) & (skin[:, 1] >= 0) & (skin[:, 1] <= h - 1)
    chroma = lab[uv[:, 1], uv[:, 0], 1:].astype(np.float32)
    whole = bool(skin_ok.all() and layout_ok.all())
    return Look(chroma, skin_ok, layout, layout_ok, whole,
                np.add.reduce(chroma, 0) / len(chroma) if whole else None, _normalised(layout) if whole else None)


def _normalised(values: np.ndarray) -> np.ndarray:
    """Zero mean, unit spread (a spread under 1 grey level counts as 1)."""
    centred = values - np.add.reduce(values) / len(values)
    return centred / max(float(np.sqrt(np.dot(centred, centred) / len(values))), 1.0)


def look_change(a: Look, b: Look) -> tuple[float, float]:
    """``(chroma, layout)`` from look ``a`` to look ``b`` (:class:`LookThresholds`' units), on what
    lies inside the frame in both; 0 for a term with too little of it (under a quarter)."""
    if a.whole and b.whole:
        diff = a.chroma_mean - b.chroma_mean
        step = a.layout_norm - b.layout_norm
        return float(np.hypot(diff[0], diff[1])), float(np.sqrt(np.dot(step, step) / len(step)))
    skin = a.skin_ok & b.skin_ok
    chroma = 0.0
    n = int(np.count_nonzero(skin))
    if n >= max(len(skin) // 4, 1):
        if n == len(skin):
            diff = a.chroma.sum(0) - b.chroma.sum(0)
        else:
            diff = a.chroma[skin].sum(0) - b.chroma[skin].sum(0)
        chroma = float(np.hypot(diff[0], diff[1])) / n
    cells = a.layout_ok & b.layout_ok
    layout = 0.0
    if np.count_nonzero(cells) >= max(len(cells) // 4, 2):
        step = _normalised(a.layout[cells]) - _normalised(b.layout[cells])
        layout = float(np.sqrt(np.dot(step, step) / len(step)))
    return chroma, layout


def look_score(a: Look, b: Look, limits: LookThresholds = LookThresholds()) -> float:
    """How far ``b`` is from looking like ``a``: the two terms of :func:`look_change`, each in
    units of its largest natural change, added (a cut above ``limits.limit``)."""
    chroma, layout = look_change(a, b)
    return chroma / limits.chroma + layout / limits.layout


def is_other_look(a: Look, b: Look, limits: LookThresholds = LookThresholds()) -> bool:
    """True when ``b`` does not look like the same face as ``a`` did a frame before."""
    return look_score(a, b, limits) > limits.limit
