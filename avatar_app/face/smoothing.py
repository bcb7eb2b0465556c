"""Causal landmark smoothing: the One-Euro filter (Casiez, Roussel & Vogel, CHI 2012).

A low-pass filter whose cutoff rises with speed: still faces are smoothed hard
(no jitter), fast motion passes with little lag.  It only looks at past samples,
so it is safe for live use.
"""

from __future__ import annotations

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2 * np.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter over arrays of any fixed shape.

    Args:
        min_cutoff: Hz, cutoff when still (lower = smoother, more lag at rest).
        beta: how fast the cutoff grows with speed (higher = less lag when moving).
        d_cutoff: Hz, cutoff of the speed estimate.

    Calling the filter with ``scale`` (the unit of the signal, e.g. the face size in
    px) measures speeds in ``scale`` per second, so one setting suits small and large
    faces.
    """

    def __init__(self, min_cutoff: float = 1.5, beta: float = 3.0, d_cutoff: float = 1.0):
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None or t <= self._t:
            if self._x is not None and self._t is not None and t <= self._t:
                return self._x.astype(np.float32)  # repeated timestamp: hold
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.astype(np.float32)
        dt = t - self._t
        dx = (x - self._x) / dt / max(scale, 1e-9)
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = _alpha(cutoff, dt)
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return self._x.astype(np.float32)


# The tracker's defaults: the face as before; the lids and irises, in the face's own frame,
# with a speed estimate 10x quicker and a cutoff that rises ~7x faster with speed, so a blink
# (a lid crossing ~0.1 of the inter-ocular distance in ~0.1 s) passes nearly whole while the
# eyes at rest keep about half the raw jitter (docs/EYES.md, "The targets").
FACE_SMOOTHING = (1.5, 3.0)
EYE_SMOOTHING = (1.5, 20.0, 10.0)


class _SimilarityFit:
    """Least-squares similarities ``z = a·w + b`` from fixed reference points ``ref (N, 2)`` to
    others (``w``, ``z`` as complex numbers); the reference's part is worked out once."""

    def __init__(self, ref: np.ndarray):
        w = ref[:, 0] + 1j * ref[:, 1]
        self.mean = w.mean()
        wc = w - self.mean
        self.weights = wc.conj() / max(float(np.vdot(wc, wc).real), 1e-12)  # a = weights · z (they sum to 0)

    def __call__(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(a, b)`` ``(K,)`` complex for ``pts (K, N, 2)``: K point sets at once."""
        z = pts[..., 0] + 1j * pts[..., 1]
        a = z @ self.weights
        return a, z.mean(-1) - a * self.mean


class LandmarkSmoother:
    """The tracker's filter: the face through one One-Euro filter, the eyes' own motion through a quicker one.

    A One-Euro filter tuned to keep a still face still rounds off a blink: its speed estimate
    (``d_cutoff`` 1 Hz) rises too late for a lid that closes and opens in 0.1–0.3 s. On the
    validation clips the face filter kept r 0.90 / 0.80x of the lids' motion that mediapipe
    sees frame by frame (docs/EYES.md). So the lid and iris points are taken apart:

    * their motion with the head: the similarity that fits the face's rigid points (a
      neutral face to this frame) is fitted to the raw and to the face-filtered points; the
      eye points travel with the filtered one, exactly as the rest of the face does;
    * their motion in the face (blinks, gaze): their coordinates in the neutral face's frame
      (units of the inter-ocular distance) go through ``eyes``' One-Euro filter.

    Args:
        face: ``(min_cutoff, beta[, d_cutoff])`` of every point's filter.
        eyes: the same for the lid and iris points in the face's frame; ``None`` filters them
            as the face.
    """

    def __init__(self, face: tuple = FACE_SMOOTHING, eyes: tuple | None = EYE_SMOOTHING):
        from .mesh import topology

        topo = topology()
        self.face = OneEuroFilter(*face)
        self.eyes = OneEuroFilter(*eyes) if eyes else None
        self._eye_idx = np.unique(np.concatenate([topo.right_eye_upper, topo.right_eye_lower, topo.right_iris,
                                                  topo.left_eye_upper, topo.left_eye_lower, topo.left_iris]))
        self._anchor = np.setdiff1d(topo.rigid, self._eye_idx)
        self._fit = _SimilarityFit(topo.neutral[self._anchor, :2].astype(np.float64))

    def reset(self) -> None:
        self.face.reset()
        if self.eyes is not None:
            self.eyes.reset()

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        """``x`` ``(478, 2|3)`` px at time ``t`` s, smoothed; ``scale`` is the inter-ocular distance in px."""
        slow = self.face(x, t, scale=scale)
        if self.eyes is None:
            return slow
        x = np.asarray(x, dtype=np.float64)
        (a_raw, a_out), (b_raw, b_out) = self._fit(np.stack([x[self._anchor, :2], slow[self._anchor, :2]]))
        z = x[self._eye_idx, 0] + 1j * x[self._eye_idx, 1]
        w = (z - b_raw) / (a_raw if abs(a_raw) > 1e-12 else 1.0)
        w = self.eyes(np.stack([w.real, w.imag], axis=1), t)  # neutral-face units: speeds in IOD/s, as `face`'s
        z = a_out * (w[:, 0] + 1j * w[:, 1]) + b_out
        out = slow.copy()
        out[self._eye_idx, 0], out[self._eye_idx, 1] = z.real, z.imag
        return out
