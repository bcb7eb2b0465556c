"""Training pairs with large head motion (issue 13): the generator must keep the source's face
when the user leans in, steps back or turns, not only under the small motion of most pairs.

Two ways, both for the resident pairs (:mod:`.resident`):

* **Hard pairs** (:meth:`HeadPoses.hardest`): for a share of the pairs the driving frame is
  the one, of several drawn from the clip, that lies furthest in head pose from the source
  (rotation angle in radians + |log scale|, from a similarity fit of the rigid landmarks, as
  the retargeting measures head motion).  Real turns: yaw and pitch cannot be made by warping
  an image.
* **Large zoom** (:func:`draw_large_zoom`): for a share of the pairs a relative zoom of
  1.1–1.4× either way (the motion limits stop at 1.35×), which the clips almost never hold
  (training pairs: |log scale| p99.9 0.22).  The image that is *shrunk* takes it: the source
  for an approach, the driving frame for a retreat, so neither is ever upsampled (an
  upsampled target teaches the network to blur, an upsampled source to paint detail).  The
  source also rolls by up to 15°.  These samples are resampled with 2× supersampling, and
  their landmark images and triangle maps drawn afresh from the moved landmarks, exactly as
  the app draws them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..face.align import similarity_fit
from ..face.mesh import topology

CANDIDATES = 16  # driving frames drawn for a hard pair; the furthest from the source is kept
ZOOM_RANGE = (1.1, 1.4)  # relative zoom of a large-zoom pair, either way
ROLL_DEGREES = 15.0  # largest extra roll of a large-zoom pair's source
SHIFT = 0.08  # largest shift of a large-zoom pair, in halves of the crop (grid units)


class HeadPoses:
    """Every frame's head pose against the mesh's neutral face: ``log_scale (N,)``, ``rotation (N, 3, 3)``.

    Args:
        points: ``(N, 478, 3)`` landmarks (px of any crop; frames without a face may hold anything).
        valid: ``(N,) bool``, the frames with a face (the others get the neutral pose).
    """

    def __init__(self, points: np.ndarray, valid: np.ndarray):
        topo = topology()
        ref = topo.neutral[topo.rigid].astype(np.float64)
        n = len(points)
        self.log_scale = np.zeros(n, np.float64)
        self.rotation = np.tile(np.eye(3), (n, 1, 1))
        for i in np.flatnonzero(valid):
            s, r, _ = similarity_fit(ref, points[i, topo.rigid])
            self.log_scale[i], self.rotation[i] = np.log(max(s, 1e-9)), r

    def motion(self, a, b) -> np.ndarray:
        """Head motion between frames ``a`` and ``b`` (broadcast): rotation angle (rad) + |Δ log scale|."""
        a, b = np.asarray(a), np.asarray(b)
        rel = self.rotation[b] @ np.swapaxes(self.rotation[a], -1, -2)
        cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
        return np.arccos(np.clip(cos, -1.0, 1.0)) + np.abs(self.log_scale[b] - self.log_scale[a])

    def hardest(self, source: int, choices: np.ndarray, rng: np.random.Generator,
                candidates: int = CANDIDATES) -> int:
        """Of ``candidates`` frames drawn from ``choices`` (not ``source`` where others exist), the one of
        largest head motion from ``source``."""
        pool = choices[choices != source] if len(choices) > 1 else choices
        drawn = rng.choice(pool, size=min(candidates, len(pool)), replace=False)
        return int(drawn[np.argmax(self.motion(source, drawn))])


@dataclass(frozen=True)
class LargeZoom:
    """Per pair of a batch: ``rows`` (indices of the pairs that take a large zoom), and for each of
    them ``zoom`` (> 1: the driving face is larger than the source's), ``roll`` (degrees, the
    source's) and ``shift`` ``(k, 2)`` (grid units)."""

    rows: np.ndarray
    zoom: np.ndarray
    roll: np.ndarray
    shift: np.ndarray

    def side_transforms(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """``{side: (rows, scale, degrees, shift)}``: the similarity each image takes.  The shrunk image
        takes the zoom (scale ``< 1``); the source also takes the roll, the shrunk image the shift."""
        approach = self.zoom > 1.0
        src_scale = np.where(approach, 1.0 / self.zoom, 1.0)
        src_shift = np.where(approach[:, None], self.shift, 0.0)
        out = {"source": (self.rows, src_scale, self.roll, src_shift)}
        retreat = ~approach
        if retreat.any():
            out["driving"] = (self.rows[retreat], self.zoom[retreat], np.zeros(int(retreat.sum())),
                              self.shift[retreat])
        return out


def draw_large_zoom(batch: int, share: float, rng: np.random.Generator) -> LargeZoom:
    """Which pairs of a batch of ``batch`` take a large zoom (each with probability ``share``), and how much."""
    rows = np.flatnonzero(rng.random(batch) < share)
    k = len(rows)
    lo, hi = np.log(ZOOM_RANGE[0]), np.log(ZOOM_RANGE[1])
    zoom = np.exp(rng.uniform(lo, hi, k) * rng.choice([-1.0, 1.0], k))
    return LargeZoom(rows, zoom, rng.uniform(-ROLL_DEGREES, ROLL_DEGREES, k), rng.uniform(-SHIFT, SHIFT, (k, 2)))
