"""The portrait's skin folds no further than the driver's own.

Expressions are offsets from the driver's rest (:mod:`.retarget`), carried point by point onto a
face of other proportions.  Where the driver's offsets are larger than the portrait's features
leave room for (a scream's lower lip pushed past a shorter chin, eyes squeezed shut pulling one row
of a brow over the other), mesh triangles of the portrait turn over; over the corpus's cross pairs
that happened in 42 % of the frames (docs/MOTION_TRANSITIONS.md §7).  The piecewise-affine warp then
samples the skin of a fold twice and squeezes what lies beside it: under a fringe, a block of
forehead skin with a hard edge where the brow was.  Around the mouth the warp's drawing order (far
to near) hides most of it.

:class:`SkinFolds` pushes such triangles open again.  Each skin triangle keeps at least
:data:`MIN_AREA` of its area on the portrait, turned the same way, unless the driver's own triangle
keeps less of its rest's area (a lip rolled out over the chin folds on the driver too: the portrait
may fold as far, never further).  A triangle below that floor is opened by moving its corners along
the area's gradient (the least motion that opens it a little past the floor; the eyes' and inner
lips' points move :data:`FEATURES` as freely as skin, so the skin around them gives way first),
corners shared by several such triangles taking the mean of their moves, in rounds until none is
left; the few a round cannot settle are then opened one after another, within :data:`BUDGET_S`.  No
corner moves further in one step than its triangle's side (a collapsed triangle asks for huge moves).
The correction grows with the fold, but not smoothly everywhere: where a triangle starts to fold, or a
neighbour joins it, the points can jump by a pixel or two at 256 (docs/MOTION_TRANSITIONS.md §7).  The eye
regions (the opening and the lid bands, drawn by the eye flow's own model) and the mouth's interior
(:mod:`.lips`) are left out, and so are triangles the portrait itself shows nearly edge-on.  Only
``x, y`` move; ``z`` (the warp's drawing order) is left as it is.
"""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np

from .mesh import REGION_SKIN, eye_paths, eye_region_triangles, topology

MIN_AREA = 0.1  # smallest share of its area on the portrait a skin triangle keeps (unless the driver's keeps less)
PUSH = 1.5  # a triangle under its floor is opened to floor + (PUSH - 1) * MIN_AREA of its area: no creeping rounds
ROUNDS = 20  # rounds moving every folding triangle at once (a scream's lip pushing down the chin: about ten)
RELAX = 1.8  # over-relaxation of the rounds (each corner moves this many times the mean of its moves)
PASSES = 10  # then passes over the few left, one triangle at a time; what still folds is drawn as it was
BUDGET_S = 0.008  # rounds and passes stop after this long (a tracker gone wrong can fold every triangle)
FEATURES = 0.1  # how freely the eyes' and inner lips' points move, against skin's 1 (0 can leave no way open)
MIN_SOURCE_AREA = 0.05  # triangles under this share of the median triangle's area are not checked (edge-on)


@lru_cache(maxsize=1)
def _skin_triangles() -> np.ndarray:
    """``(F, 3)`` skin triangles outside both eye regions (read, never changed)."""
    topo = topology()
    keep = (topo.triangle_region == REGION_SKIN) & (eye_region_triangles(topo).sum(1) == 0)
    tris = topo.triangles[keep]
    tris.setflags(write=False)
    return tris


@lru_cache(maxsize=1)
def _free_points() -> np.ndarray:
    """``(478,) float64``: how freely each point moves when a fold is opened: 1 for skin, :data:`FEATURES`
    for the eyes' points (corners, lids, the rings around them, irises: the eye flow's own inputs) and
    the inner lips' (the mouth's opening), so the skin around them gives way first."""
    topo = topology()
    free = np.ones(len(topo.neutral))
    for path in eye_paths(topo).values():
        free[np.concatenate(path)] = FEATURES
    free[topo.lips_inner_upper] = free[topo.lips_inner_lower] = FEATURES
    free.setflags(write=False)
    return free


def signed_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """``(F,)`` signed areas of ``triangles`` on ``points (N, 2|3)`` (``x, y`` only; image axes)."""
    p = np.asarray(points, np.float64)
    a, b, c = p[triangles[:, 0]], p[triangles[:, 1]], p[triangles[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def _checked(area: np.ndarray) -> np.ndarray:
    size = np.abs(area)
    return size > MIN_SOURCE_AREA * np.median(size)


class SkinFolds:
    """The fold limit of one portrait face ``base`` (``(478, 2|3)``, the face expression offsets are
    added to; crop px)."""

    def __init__(self, base: np.ndarray):
        tris = _skin_triangles()
        self._free = _free_points()
        area = signed_areas(base, tris)
        keep = _checked(area)
        self._all = tris
        self._keep = keep
        self.triangles = tris[keep]
        self._sign = np.sign(area[keep])
        self.sizes = np.abs(area[keep])  # px², each checked triangle's area on ``base``
        self.sizes.setflags(write=False)
        self._reach = np.sqrt(self.sizes)  # the most a corner moves in one step for its triangle: about its side

    def shares(self, shape: np.ndarray) -> np.ndarray:
        """Per checked triangle (:attr:`triangles`), the share of its area on ``base`` that ``shape`` keeps
        (signed: < 0 where it turned over; what :meth:`driver_ratios` gives for the driver)."""
        return self._sign * signed_areas(shape, self.triangles) / self.sizes

    def driver_ratios(self, face: np.ndarray, rest: np.ndarray) -> np.ndarray:
        """Per checked triangle, the share of its rest's area the driver's ``face`` keeps (signed: < 0 where
        it turned over), both in the driver's frame with the head's pose undone; 1 where the rest shows
        the triangle (nearly) edge-on."""
        rest_area = signed_areas(rest, self._all)
        ok = _checked(rest_area)
        ratio = np.ones(len(self._all))
        ratio[ok] = signed_areas(face, self._all[ok]) / rest_area[ok]
        return ratio[self._keep]

    def __call__(self, shape: np.ndarray, driver_ratios: np.ndarray | None = None) -> np.ndarray:
        """``shape`` (``base`` plus offsets, ``(478, 2|3)``) pushed open where a skin triangle keeps less
        of its area on ``base`` than :data:`MIN_AREA`, or than ``driver_ratios``
        (:meth:`driver_ratios`) where those are less.  Returns ``shape`` itself when nothing does (or when
        its points are not all finite)."""
        ratio = np.full(len(self.triangles), MIN_AREA)
        if driver_ratios is not None:
            ratio = np.minimum(ratio, driver_ratios)
        floor = ratio * self.sizes - 1e-6 * self.sizes
        target = floor + (PUSH - 1.0) * MIN_AREA * self.sizes
        tris, sign = self.triangles, self._sign
        xy = np.array(np.asarray(shape)[:, :2], np.float64)
        bad = sign * signed_areas(xy, tris) < floor
        if not bad.any() or not np.isfinite(xy).all():
            return shape
        start = time.perf_counter()
        for _ in range(ROUNDS):  # all at once: each corner moves by the mean of its triangles' moves
            t = tris[bad]
            moves = self._moves(xy, bad, target)
            step = np.zeros_like(xy)
            count = np.zeros(len(xy))
            for k in range(3):
                np.add.at(step, t[:, k], moves[k])
                np.add.at(count, t[:, k], 1.0)
            xy += RELAX * step / np.maximum(count, 1.0)[:, None]
            bad = sign * signed_areas(xy, tris) < floor
            if not bad.any() or time.perf_counter() - start > BUDGET_S:
                break
        for _ in range(PASSES):  # the few left: one triangle after another
            for j in np.flatnonzero(bad):
                if time.perf_counter() - start > BUDGET_S:
                    break
                if sign[j] * signed_areas(xy, tris[j:j + 1])[0] < floor[j]:
                    one = np.zeros(len(tris), bool)
                    one[j] = True
                    for k, move in enumerate(self._moves(xy, one, target)):
                        xy[tris[j, k]] += move[0]
            bad = sign * signed_areas(xy, tris) < floor
            if not bad.any() or time.perf_counter() - start > BUDGET_S:
                break
        out = np.array(shape, copy=True)
        out[:, :2] = xy
        return out

    def _moves(self, xy: np.ndarray, which: np.ndarray, target: np.ndarray) -> list[np.ndarray]:
        """For the triangles ``which`` (a mask), each corner's move ``(n, 2)`` that brings the triangle's area to
        ``target`` to first order: the least such move, along the area's gradient, each corner weighted by
        how freely it moves, no corner moving further than :attr:`_reach` (a collapsed triangle's gradient
        is tiny and the move it asks for huge)."""
        tris, sign, free = self.triangles[which], self._sign[which], self._free
        a, b, c = xy[tris[:, 0]], xy[tris[:, 1]], xy[tris[:, 2]]
        s = 0.5 * sign[:, None]
        grads = (s * np.stack([b[:, 1] - c[:, 1], c[:, 0] - b[:, 0]], 1),  # d(area) / d(corner)
                 s * np.stack([c[:, 1] - a[:, 1], a[:, 0] - c[:, 0]], 1),
                 s * np.stack([a[:, 1] - b[:, 1], b[:, 0] - a[:, 0]], 1))
        w = [free[tris[:, k], None] for k in range(3)]
        norm = sum(wk[:, 0] * (g * g).sum(1) for wk, g in zip(w, grads))
        lam = (target[which] - sign * signed_areas(xy, tris)) / np.maximum(norm, 1e-12)
        out = []
        for wk, g in zip(w, grads):
            move = lam[:, None] * wk * g
            length = np.linalg.norm(move, axis=1, keepdims=True)
            out.append(move * np.minimum(1.0, self._reach[which, None] / np.maximum(length, 1e-12)))
        return out
