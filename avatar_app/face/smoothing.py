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
