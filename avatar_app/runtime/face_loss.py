"""What the avatar does when the driver's face is lost, and when it comes back.

Hold the last pose for a moment (a hand passing in front of the face), then ease
back to the neutral pose, and when the face returns blend into it instead of
jumping.  A pure function of time and inputs, so it is easy to test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..types import Landmarks

TRACKING, HOLDING, EASING, NO_FACE = "tracking", "holding", "easing to neutral", "no face yet"


def _smooth(t: float) -> float:
    t = min(max(t, 0.0), 1.0)
    return t * t * (3 - 2 * t)


def _lerp(a: Landmarks, b: Landmarks, t: float) -> Landmarks:
    return a.with_points(a.points + (b.points - a.points) * np.float32(t))


@dataclass
class FaceLossSmoother:
    """Target landmarks through face loss and recovery.

    Args:
        hold_s: seconds to hold the last pose after the face is lost.
        ease_s: seconds to ease from the held pose to neutral after that.
        resume_s: seconds to blend from the shown pose into the tracked one when the
            face comes back.
    """

    hold_s: float = 0.5
    ease_s: float = 1.0
    resume_s: float = 0.25

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.state = NO_FACE
        self._last: Landmarks | None = None  # last pose shown
        self._lost_at: float | None = None
        self._lost_pose: Landmarks | None = None
        self._resume_from: Landmarks | None = None
        self._resume_at: float | None = None

    def update(self, now: float, target: Landmarks | None, neutral: Landmarks) -> Landmarks:
        """The pose to show at time ``now`` (s) given this frame's target (None = no face)."""
        if target is not None:
            if self.state in (HOLDING, EASING) and self._last is not None:
                self._resume_from, self._resume_at = self._last, now
            self.state, self._lost_at = TRACKING, None
            out = target
            if self._resume_from is not None and self._resume_at is not None:
                t = (now - self._resume_at) / self.resume_s if self.resume_s > 0 else 1.0
                if t < 1.0:
                    out = _lerp(self._resume_from, target, _smooth(t))
                else:
                    self._resume_from = self._resume_at = None
        elif self._last is None or self.state == NO_FACE:
            self.state, out = NO_FACE, neutral
        else:
            if self._lost_at is None:
                self._lost_at, self._lost_pose = now, self._last
                self._resume_from = self._resume_at = None
            assert self._lost_pose is not None
            dt = now - self._lost_at
            if dt < self.hold_s:
                self.state, out = HOLDING, self._lost_pose
            else:
                self.state = EASING
                t = (dt - self.hold_s) / self.ease_s if self.ease_s > 0 else 1.0
                out = _lerp(self._lost_pose, neutral, _smooth(t))
        self._last = out
        return out
