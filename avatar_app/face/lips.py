"""The lips meet, they never cross.

Expressions are offsets from the driver's rest (:mod:`.retarget`): a driver whose mouth shuts
more than at its rest moves the portrait's lips towards each other by that much.  On a portrait
whose mouth is already closed (or nearly), that would push the lower lip over the upper one — a
fold the warp draws as torn lips.  :func:`part_crossed_lips` moves each lip back by half the
overlap, upper lip up and lower lip down along the mouth's own vertical, so they meet where they
crossed; a mouth that is open, however little, is left exactly as it is.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .mesh import NOSE_TIP, mouth_center, topology

LEFT_CORNER, RIGHT_CORNER = 61, 291  # outer mouth corners (subject's right, left)


@lru_cache(maxsize=1)
def _lip_halves() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(upper, lower)`` point indices of each lip (inner edge to outer edge, corners left out) on the
    mesh's neutral face, and ``(pairs_upper, pairs_lower)``, the inner edges' facing points."""
    topo = topology()
    n = topo.neutral[:, :2].astype(np.float64)
    up, lo = topo.lips_inner_upper[1:-1], topo.lips_inner_lower[1:-1]
    mid = (n[up] + n[lo]) / 2
    order = np.argsort(mid[:, 0])

    def line(x: np.ndarray) -> np.ndarray:  # where the closed lips meet, at each x
        return np.interp(x, mid[order, 0], mid[order, 1])

    outer = n[topo.lips_outer]
    above = outer[:, 1] <= line(outer[:, 0])
    top = np.interp(n[:, 0], *_sorted(outer[above]))
    bottom = np.interp(n[:, 0], *_sorted(outer[outer[:, 1] >= line(outer[:, 0])]))
    # every other point between the outer contour's top and bottom, inside its width
    inside = ((n[:, 0] > outer[:, 0].min()) & (n[:, 0] < outer[:, 0].max())
              & (n[:, 1] >= top - 1e-6) & (n[:, 1] <= bottom + 1e-6))
    skip = {int(topo.lips_inner_upper[0]), int(topo.lips_inner_upper[-1]), LEFT_CORNER, RIGHT_CORNER}
    skip |= set(int(i) for i in up) | set(int(i) for i in lo)
    rest = np.array([i for i in np.flatnonzero(inside) if int(i) not in skip], int)
    is_upper = n[rest, 1] < line(n[rest, 0])
    return (np.union1d(up, rest[is_upper]), np.union1d(lo, rest[~is_upper]), np.asarray(up), np.asarray(lo))


def _sorted(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(points[:, 0])
    return points[order, 0], points[order, 1]


def _mouth_axes(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """``(along, down, width)``: the unit vector from the mouth's right corner to its left, the one
    perpendicular to it towards the chin, and the corners' distance; None for a degenerate mouth."""
    across = p[RIGHT_CORNER, :2] - p[LEFT_CORNER, :2]
    width = float(np.linalg.norm(across))
    if width < 1e-9:
        return None
    along = across / width
    down = np.array([-along[1], along[0]])
    if down @ (mouth_center(p)[:2] - p[NOSE_TIP, :2]) < 0:  # towards the chin, from the nose
        down = -down
    return along, down, width


def inner_lip_gaps(points: np.ndarray) -> np.ndarray:
    """Each pair of facing inner-lip points: lower minus upper along the mouth's vertical (the points'
    units; negative where the lips cross)."""
    _, _, pu, pl = _lip_halves()
    p = np.asarray(points, np.float64)
    axes = _mouth_axes(p)
    return np.zeros(len(pu)) if axes is None else (p[pl, :2] - p[pu, :2]) @ axes[1]


def part_crossed_lips(points: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """``points`` (``(478, 2|3)``, one face) with crossed inner lips moved apart until they meet.

    The overlap at each pair of facing inner-lip points is measured along the mouth's vertical
    (perpendicular to the line between its corners); each lip moves by half of it, the overlap
    interpolated along the mouth for the points between the inner and outer edges.  ``allowed``:
    per pair, how far (≤ 0) the lips may cross anyway — a face's own landmarks, whose tracked lips
    can overlap by a hair, are then returned untouched.  Returns ``points`` itself when nothing
    crosses further than that."""
    upper, lower, pu, pl = _lip_halves()
    p = np.asarray(points, np.float64)
    axes = _mouth_axes(p)
    if axes is None:
        return points
    along, down, width = axes
    floor = 0.0 if allowed is None else np.minimum(np.asarray(allowed, np.float64), 0.0)
    overlap = np.maximum(0.0, floor - (p[pl, :2] - p[pu, :2]) @ down)
    if not overlap.any():
        return points
    at = np.clip(((p[pu, :2] + p[pl, :2]) / 2 - p[LEFT_CORNER, :2]) @ along, 0.0, width)  # np.interp needs order
    order = np.argsort(at)
    # nothing at the corners, where the lips always meet
    xs = np.concatenate([[0.0], at[order], [width]])
    ds = np.concatenate([[0.0], overlap[order], [0.0]])
    out = p.copy()
    for idx, sign in ((upper, -0.5), (lower, 0.5)):
        amount = np.interp((p[idx, :2] - p[LEFT_CORNER, :2]) @ along, xs, ds)
        out[idx, :2] += sign * amount[:, None] * down
    return out.astype(np.asarray(points).dtype, copy=False)
