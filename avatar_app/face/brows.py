"""Brows under a fringe: hair over the portrait's brows does not move with the driver's brows.

The tracker places a portrait's brows where they would be even when a fringe hides them, so the
retargeted brow offsets land on hair: the analytic warp bends the fringe's edge with the driver's brows,
and where the driver shuts their eyes it pulls the edge down into a straight line over a stretched, pale
lid band (hm_jgz, docs/MOTION_MATRIX.md §3).  Hair hangs; the brows move under it.

:func:`brow_follow` says, per brow, how much of the driver's brow motion the portrait shows: 1 for a brow
with skin above it, falling to 0 as more of its upper row has hair right above it.  A point counts as
under hair where the portrait just above it (:data:`ABOVE` of the brow's distance from its eye, across the
brow) is darker than the cheeks by :data:`HAIR_DARKER` (a ramp between its two figures): over a forehead,
hair is what is much darker than the face's own skin.  A brow follows fully while at most ``COVERED[0]`` of
its upper row is under hair and not at all from ``COVERED[1]``: a low hairline, a fringe ending at the brows or
a lock over a brow's outer end leave it moving.  On the first frames of the corpus's 114 clips 4 of 228 brows
follow less than fully, one not at all (hm_jgz's right); every other brow fully.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from ..types import SourcePortrait
from .appearance import skin_points
from .mesh import LEFT_BROW_UPPER, RIGHT_BROW_UPPER, eye_centers, topology

ABOVE = 0.15  # how far above the brow's upper row the portrait is looked at, in brow-to-eye distances
RADIUS = 0.05  # the box looked at there: half its side, in brow-to-eye distances
HAIR_DARKER = (40.0, 90.0)  # L (0-255 Lab) below the cheeks' median: not, and fully, hair
COVERED = (0.7, 0.85)  # share of a brow's upper row under hair from which it follows less, and not at all


@lru_cache(maxsize=1)
def _cheek_points() -> np.ndarray:
    """Skin points below the eyes (cheeks, nose, chin): the face's own skin, never under a fringe."""
    topo = topology()
    skin = skin_points()
    eye_y = topo.neutral[np.concatenate([topo.right_eye_lower, topo.left_eye_lower]), 1].max()
    return skin[topo.neutral[skin, 1] > eye_y]


def _lightness(lab: np.ndarray, points: np.ndarray, radius: int) -> np.ndarray:
    """Mean L of the ``(2 r + 1)²`` box around each point (clipped to the image; NaN where none of it is)."""
    h, w = lab.shape[:2]
    out = np.full(len(points), np.nan)
    for k, (x, y) in enumerate(np.rint(points).astype(np.int64)):
        x0, x1, y0, y1 = max(0, x - radius), min(w, x + radius + 1), max(0, y - radius), min(h, y + radius + 1)
        if x1 > x0 and y1 > y0:
            out[k] = lab[y0:y1, x0:x1, 0].mean()
    return out


def portrait_brow_follow(portrait: SourcePortrait) -> tuple[float, float]:
    """:func:`brow_follow` of a prepared portrait (worked out once, kept in its ``extras``)."""
    if "brow_follow" not in portrait.extras:
        portrait.extras["brow_follow"] = brow_follow(portrait.crop, portrait.landmarks.points)
    return portrait.extras["brow_follow"]


def brow_follow(crop: np.ndarray, points: np.ndarray) -> tuple[float, float]:
    """``(right, left)``: how much of the driver's brow motion each brow of the portrait ``crop`` (BGR uint8)
    with landmarks ``points`` (``(478, 2+)`` crop px) shows (1 = all, 0 = none: hair hides it)."""
    topo = topology()
    pts = np.asarray(points, np.float64)[:, :2]
    lab = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB)
    right_eye, left_eye = eye_centers(pts)
    size = float(np.linalg.norm(left_eye - right_eye))
    cheeks = _lightness(lab, pts[_cheek_points()], max(1, round(0.02 * size)))
    if np.isnan(cheeks).all():
        return 1.0, 1.0
    skin = float(np.nanmedian(cheeks))
    out = []
    for brow, row, eye in ((topo.right_brow, RIGHT_BROW_UPPER, right_eye), (topo.left_brow, LEFT_BROW_UPPER, left_eye)):
        b = pts[brow]
        centre = b.mean(0)
        reach = float(np.linalg.norm(centre - eye))  # the brow's distance from its eye
        along = np.linalg.svd(b - centre)[2][0]  # the brow's own direction
        up = np.array([-along[1], along[0]])
        up = up if up @ (centre - eye) > 0 else -up  # across the brow, away from the eye
        above = _lightness(lab, pts[list(row)] + ABOVE * reach * up, max(1, round(RADIUS * reach)))
        darker = skin - above
        hair = np.clip((darker - HAIR_DARKER[0]) / (HAIR_DARKER[1] - HAIR_DARKER[0]), 0.0, 1.0)
        covered = float(np.nanmean(hair)) if not np.isnan(hair).all() else 0.0
        out.append(float(np.clip(1.0 - (covered - COVERED[0]) / (COVERED[1] - COVERED[0]), 0.0, 1.0)))
    return out[0], out[1]
