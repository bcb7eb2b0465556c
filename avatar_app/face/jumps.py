"""When one tracked face -> the next is a *jump* (a shot cut, another person, a re-detection far
away), not motion.

One test, used in two places: the tracker restarts its smoothing when the raw landmarks of the
followed face jump (so a cut shows in one frame instead of being spread over several), and the
driver guard (:class:`avatar_app.runtime.face_loss.DriverGuard`) holds, eases and re-anchors on
a jump instead of carrying it into the avatar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..types import Landmarks
from .align import similarity_fit
from .mesh import topology
from .retarget import inter_ocular


@dataclass(frozen=True)
class JumpThresholds:
    """When one tracked face → the next is a *jump*, not motion (per frame at 30 fps; gaps
    allow proportionally more for the rate-like terms, up to three frames' worth).

    Measured on the real clips' own tracked motion (docs/MOTION.md): a head moves at most
    about 0.2 inter-ocular distances (IOD) and 4 % in scale per frame, and the rigid
    points' shape changes by at most 0.07 IOD between consecutive frames.

    Attributes:
        shift: rigid-centroid motion, IOD.
        zoom: ``|log scale|``.
        shape: RMS residual of the rigid points after the best similarity, IOD.
    """

    shift: float = 0.45
    zoom: float = 0.12
    shape: float = 0.09


def jump_terms(a: Landmarks, b: Landmarks) -> tuple[float, float, float]:
    """``(shift, zoom, shape)`` from face ``a`` to face ``b``, the terms :func:`is_jump` tests
    (:class:`JumpThresholds`' units: IOD, ``|log scale|``, IOD)."""
    rigid = topology().rigid
    pa, pb = a.points[rigid].astype(np.float64), b.points[rigid].astype(np.float64)
    iod = max(inter_ocular(a.points), 1e-6)
    s, rot, t = similarity_fit(pa, pb)
    shift = float(np.linalg.norm(pb[:, :2].mean(0) - pa[:, :2].mean(0))) / iod
    shape = float(np.sqrt(((pb - (s * pa @ rot.T + t)) ** 2).sum(1).mean())) / (max(s, 1e-6) * iod)
    return shift, abs(float(np.log(max(s, 1e-6)))), shape


def is_jump(a: Landmarks, b: Landmarks, dt: float, limits: JumpThresholds = JumpThresholds()) -> bool:
    """True when ``b`` (``dt`` s after ``a``) is not a continuation of ``a``'s face: a shot cut,
    a re-detection somewhere else, another person (different shape)."""
    frames = min(max(1.0, dt * 30.0), 3.0)  # a face re-found after a long gap must still be near
    shift, zoom, shape = jump_terms(a, b)
    return shift > limits.shift * frames or zoom > limits.zoom * frames or shape > limits.shape
