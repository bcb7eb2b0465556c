"""Eye measures from the 478 landmarks: where the irises look and how open the lids are.

Both are ratios of one face's own distances, so they compare across faces, crops and
sizes (a driver and an avatar of another person):

* :func:`horizontal_gaze` — each iris centre's position along its eye-corner line,
  0 at the image-left corner .. 1 at the image-right one (about 0.5 looking ahead),
  averaged over both eyes: it grows when the eyes turn towards the image's right;
* :func:`eye_openness` — the mean gap between the upper and lower lid paths over the
  eye's width (corner to corner), averaged over both eyes (0 = closed).

Points are ``(478, 2|3)`` in any px (only ``x, y`` are used).
"""

from __future__ import annotations

import numpy as np

from .mesh import topology

CLOSED_EYES = 0.1  # eye openness (lid gap over eye width) under which eyes count as closed (or nearly so)


def _eyes():
    topo = topology()
    return ((topo.right_eye_upper, topo.right_eye_lower, topo.right_iris[0]),
            (topo.left_eye_upper, topo.left_eye_lower, topo.left_iris[0]))


def eye_gaze(points: np.ndarray) -> tuple[float, float]:
    """``(right, left)`` iris position along each eye's corner line, 0 at the image-left corner .. 1 at the
    image-right corner."""
    p = np.asarray(points, dtype=np.float64)[:, :2]
    out = []
    for upper, _, iris in _eyes():
        a, b = p[upper[0]], p[upper[-1]]
        if a[0] > b[0]:
            a, b = b, a
        axis = b - a
        out.append(float((p[iris] - a) @ axis / max(float(axis @ axis), 1e-9)))
    return out[0], out[1]


def horizontal_gaze(points: np.ndarray) -> float:
    """Both eyes' :func:`eye_gaze`, averaged."""
    return float(np.mean(eye_gaze(points)))


def eye_openness(points: np.ndarray) -> float:
    """Mean lid gap over eye width, both eyes averaged (0 = closed, about 0.3 open)."""
    p = np.asarray(points, dtype=np.float64)[:, :2]
    out = []
    for upper, lower, _ in _eyes():
        gap = np.linalg.norm(p[upper[1:-1]] - p[lower[1:-1]], axis=1).mean()
        width = np.linalg.norm(p[upper[0]] - p[upper[-1]])
        out.append(gap / max(width, 1e-9))
    return float(np.mean(out))


def hold_gaze(target: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``target`` with its irises placed where ``reference``'s sit in their eyes: eye contact.

    Each iris (centre and ring, ``x, y``) keeps its position relative to its eye corners in
    ``reference`` (the face at rest, looking into the camera), carried to the target's corners
    by the similarity between the two corner pairs; so the gaze is held while the head moves
    and the lids blink. Everything else, and the irises' ``z``, is ``target``'s.

    Args:
        target: ``(478, 2|3)`` landmarks to change (not modified; a copy is returned).
        reference: ``(478, 2|3)`` landmarks whose gaze to keep, same px as ``target``.
    """
    out = np.array(target, dtype=np.float64, copy=True)
    ref = np.asarray(reference, dtype=np.float64)
    topo = topology()
    for upper, iris in ((topo.right_eye_upper, topo.right_iris), (topo.left_eye_upper, topo.left_iris)):
        ends = [int(upper[0]), int(upper[-1])]
        a_r, b_r = ref[ends, :2]
        a_t, b_t = out[ends, :2]
        zr, zt = complex(*(b_r - a_r)), complex(*(b_t - a_t))
        k = zt / zr if abs(zr) > 1e-9 else 1.0
        rel = (ref[iris, 0] - a_r[0]) + 1j * (ref[iris, 1] - a_r[1])
        moved = rel * k + complex(*a_t)
        out[iris, 0], out[iris, 1] = moved.real, moved.imag
    return out.astype(np.asarray(target).dtype)
