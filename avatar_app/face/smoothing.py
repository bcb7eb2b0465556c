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


def _rotation(a: complex) -> np.ndarray:
    """``(2, 2)``: ``p @ _rotation(a)`` multiplies the points ``p (N, 2)`` by ``a`` as complex numbers."""
    return np.array([[a.real, a.imag], [-a.imag, a.real]])


class _SimilarityFit:
    """Least-squares similarities ``z = a·w + b`` (points as complex numbers) from fixed reference points
    ``ref (N, 2)`` to the points ``anchor`` of landmark sets, as one matrix product: the reference's part
    is worked out once (the live path runs two fits a frame)."""

    def __init__(self, ref: np.ndarray, anchor: np.ndarray):
        w = ref[:, 0] + 1j * ref[:, 1]
        self.mean = complex(w.mean())
        wc = w - self.mean
        self._weights = wc.conj() / max(float(np.vdot(wc, wc).real), 1e-12)  # a = weights · z (they sum to 0)
        self._anchor = anchor
        self._maps: dict[tuple[int, int], np.ndarray] = {}

    def __call__(self, pts: np.ndarray) -> tuple[list[complex], list[complex]]:
        """``(a, b)``, one each per landmark set of ``pts (K, V, D)`` (px, ``D`` ≥ 2)."""
        k, v, d = pts.shape
        m = self._maps.get((v, d))
        if m is None:  # (V·D, 4): flattened points -> Re a, Im a, mean x, mean y
            m = np.zeros((v, d, 4))
            p, q = self._weights.real, self._weights.imag  # a = Σ (p + iq)(x + iy) = Σ (px − qy) + i(qx + py)
            m[self._anchor, 0, 0], m[self._anchor, 0, 1] = p, q
            m[self._anchor, 1, 0], m[self._anchor, 1, 1] = -q, p
            m[self._anchor, 0, 2] = m[self._anchor, 1, 3] = 1.0 / len(self._anchor)
            m = self._maps[(v, d)] = m.reshape(v * d, 4)
        r = pts.reshape(k, v * d) @ m
        a = [complex(x, y) for x, y in r[:, :2]]
        return a, [complex(x, y) - ai * self.mean for (x, y), ai in zip(r[:, 2:], a)]


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
        self._fit = _SimilarityFit(topo.neutral[self._anchor, :2].astype(np.float64), self._anchor)

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
        (a_raw, a_out), (b_raw, b_out) = self._fit(np.stack([x, slow]))
        eyes = x[self._eye_idx, :2] - (b_raw.real, b_raw.imag)
        w = eyes @ _rotation(1.0 / a_raw if abs(a_raw) > 1e-12 else 1.0)  # in the neutral face's frame
        w = self.eyes(w, t)  # neutral-face units: speeds in IOD/s, as `face`'s
        out = slow.copy()
        out[self._eye_idx, :2] = w @ _rotation(a_out) + (b_out.real, b_out.imag)
        return out
