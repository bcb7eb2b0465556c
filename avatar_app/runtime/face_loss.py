"""What the avatar does when the driver's face is lost, jumps or changes.

Hold the last pose for a moment (a hand passing in front of the face), then ease
back to the neutral pose, and when the face returns blend into it instead of
jumping.  A face that *jumps* (a shot cut, another person, a re-detection far
away) is treated the same way, and once it stays it becomes the new neutral
(:class:`DriverGuard`).  Pure functions of time and inputs, so easy to test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..face.jumps import JumpThresholds, is_jump  # the guard's test (also the tracker's)
from ..face.mesh import face_motion
from ..face.retarget import Retargeter, inter_ocular, soft_limit
from ..types import Landmarks

TRACKING, HOLDING, EASING, NO_FACE = "tracking", "holding", "easing to neutral", "no face yet"
SETTLING = "new face: settling"


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
        max_speed: the fastest an ease or a blend moves any point, in the pose's
            inter-ocular distances per second: a long way takes longer than ``ease_s`` /
            ``resume_s``, so no transition is faster than natural head motion.
    """

    hold_s: float = 0.5
    ease_s: float = 1.0
    resume_s: float = 0.25
    max_speed: float = 0.8

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.state = NO_FACE
        self._last: Landmarks | None = None  # last pose shown
        self._lost_at: float | None = None
        self._lost_pose: Landmarks | None = None
        self._resume_from: Landmarks | None = None
        self._resume_at: float | None = None
        self._resume_s = self.resume_s
        self._ease_s = self.ease_s

    def shown(self, pose: Landmarks) -> None:
        """Record the pose actually shown when a caller changed it (holds and eases start there)."""
        self._last = pose

    def _duration(self, base: float, a: Landmarks, b: Landmarks) -> float:
        """``base`` s, or longer so that a smoothstep from ``a`` to ``b`` (peak speed 1.5x the
        mean) keeps every point under ``max_speed``."""
        iod = min(inter_ocular(a.points), inter_ocular(b.points))
        if iod < 1e-6 or self.max_speed <= 0:
            return base
        far = float(np.linalg.norm((b.points - a.points)[:, :2], axis=1).max()) / iod
        return max(base, 1.5 * far / self.max_speed)

    def update(self, now: float, target: Landmarks | None, neutral: Landmarks) -> Landmarks:
        """The pose to show at time ``now`` (s) given this frame's target (None = no face)."""
        if target is not None:
            if self.state in (HOLDING, EASING) and self._last is not None:
                self._resume_from, self._resume_at = self._last, now
                self._resume_s = self._duration(self.resume_s, self._last, target)
            self.state, self._lost_at = TRACKING, None
            out = target
            if self._resume_from is not None and self._resume_at is not None:
                t = (now - self._resume_at) / self._resume_s if self._resume_s > 0 else 1.0
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
                self._ease_s = self._duration(self.ease_s, self._last, neutral)
            assert self._lost_pose is not None
            dt = now - self._lost_at
            if dt < self.hold_s:
                self.state, out = HOLDING, self._lost_pose
            else:
                self.state = EASING
                t = (dt - self.hold_s) / self._ease_s if self._ease_s > 0 else 1.0
                out = _lerp(self._lost_pose, neutral, _smooth(t))
        self._last = out
        return out


class DriverGuard:
    """The one mechanism between the tracker and the animator: driver landmarks in, the
    pose to show out, whatever the driver does.

    * a tracked face is retargeted (with the retargeter's soft motion limits);
    * no face: hold, then ease to the neutral (:class:`FaceLossSmoother`);
    * a **jump** (:func:`is_jump` against the last accepted face, or the tracker's ``cut``: a
      shot cut, another person, a face re-found far away) is handled like a lost face — the avatar holds
      and eases, nothing of the jump reaches it — and once the new face has stayed
      continuous for ``settle_s`` it becomes the new neutral (re-anchored) and the
      avatar blends into it;
    * a face that returns after a loss where it was (no jump) resumes with a blend.

    * while tracking, the pose moves no faster than ``max_speed`` (soft knee): the real
      clips' heads move at most about 7 face sizes/s (0.2 inter-ocular distances a frame);
    * a transition the driver did not make (a blend into a re-anchored or returning face, an
      ease to the neutral) never adds to the driver's own motion: a frame's median point moves
      at most as far as the driver's target moved, or ``transition_speed`` if that is more, so
      the avatar is never faster than the driver, nor faster than a calm glide of its own.  (A
      calibration made outside the guard, the user's or an animator's new limits, changes the
      target itself: that reaches the avatar at the speed limit's pace.)

    Args:
        retarget: the retargeter (calibrated on the first face if it is not yet).
        smoother: hold / ease / resume timing.
        settle_s: how long a new face must stay before it is taken as the neutral.
        thresholds: what counts as a jump.
        max_speed: face sizes (:func:`~avatar_app.face.mesh.face_size`) per second.
        transition_speed: face sizes per second, the fastest a transition moves the avatar where
            the driver moves slower (median point).
    """

    def __init__(self, retarget: Retargeter, smoother: FaceLossSmoother | None = None, settle_s: float = 0.5,
                 thresholds: JumpThresholds = JumpThresholds(), max_speed: float = 6.0,
                 transition_speed: float = 0.75):
        self.retarget = retarget
        self.smoother = smoother or FaceLossSmoother()
        self.settle_s = settle_s
        self.thresholds = thresholds
        self.max_speed = max_speed
        if transition_speed <= 0:
            raise ValueError(f"transition_speed must be positive (face sizes/s), got {transition_speed}")
        self.transition_speed = transition_speed
        self.reset()

    def reset(self) -> None:
        self.smoother.reset()
        self._accepted: tuple[float, Landmarks] | None = None  # last face followed (time, driver px)
        self._candidate: tuple[float, float, Landmarks] | None = None  # (since, last seen, face) after a jump
        self._shown: tuple[float, Landmarks] | None = None
        self._paced: Landmarks | None = None  # the last frame's pose after pacing, before the speed limit
        self._target: Landmarks | None = None  # the last frame's retargeted face (None: no face)
        self.jumps = 0

    @property
    def state(self) -> str:
        return SETTLING if self._candidate is not None and self.smoother.state != TRACKING else self.smoother.state

    def _settle(self, now: float, driver: Landmarks, cut: bool) -> Landmarks | None:
        """Watch a face that arrived with a jump; re-anchor on it once it has stayed."""
        assert self._candidate is not None
        since, seen, face = self._candidate
        if cut or is_jump(face, driver, now - seen, self.thresholds):
            since = now  # it moved again: start over
        if now - since < self.settle_s:
            self._candidate = (since, now, driver)
            return None
        self._candidate = None
        self.retarget.calibrate(driver, settle=True)
        self._accepted = (now, driver)
        return self.retarget(driver)

    def update(self, now: float, driver: Landmarks | None, neutral: Landmarks, cut: bool = False) -> Landmarks:
        """The pose to show at ``now`` (s) for this frame's driver face (None = no face);
        ``neutral`` is the source's own pose (crop px); ``cut``: the tracker saw this face jump
        (:attr:`~avatar_app.types.TrackResult.cut`, its raw landmarks), a jump whatever
        :func:`is_jump` says of the smoothed ones."""
        target = None
        if driver is not None:
            if not self.retarget.calibrated:
                self.retarget.calibrate(driver, settle=True)
            if self._candidate is None and self._accepted is not None:
                at, last = self._accepted
                if cut or is_jump(last, driver, now - at, self.thresholds):
                    self._candidate = (now, now, driver)
                    self.jumps += 1
            if self._candidate is not None:
                target = self._settle(now, driver, cut)
            else:
                self._accepted = (now, driver)
                target = self.retarget(driver)
        out = self.smoother.update(now, target, neutral)
        if self._shown is not None:
            if self.smoother.state != TRACKING:
                self._paced = self._shown[1]  # a hold or an ease starts from what was shown
            out = self._paced = self._pace(now, out, target)
            if self.smoother.state == TRACKING:
                out = self._speed_limited(now, out)
            self.smoother.shown(out)
        else:
            self._paced = out
        self._shown, self._target = (now, out), target
        return out

    def _pace(self, now: float, out: Landmarks, target: Landmarks | None) -> Landmarks:
        """``out``, moved from the last paced pose no further than the driver's target moved since
        the last frame, or ``transition_speed`` allows in this frame's time if that is more.  (The
        speed limit comes after: a pose it held back catches up at its own pace.)"""
        assert self._shown is not None and self._paced is not None
        at, last = self._shown[0], self._paced
        own = 0.0 if target is None or self._target is None else face_motion(self._target.points, target.points)
        allowed = max(own, self.transition_speed * min(max(now - at, 0.0), 0.2))
        moved = face_motion(last.points, out.points)
        if moved <= allowed:
            return out
        return last.with_points(last.points + (out.points - last.points) * np.float32(allowed / moved))

    def _speed_limited(self, now: float, target: Landmarks) -> Landmarks:
        assert self._shown is not None
        at, last = self._shown
        dt = min(max(now - at, 1 / 60), 0.2)
        step = target.points - last.points
        speed = face_motion(last.points, target.points) / dt
        if speed <= 0.6 * self.max_speed:
            return target
        keep = float(soft_limit(speed, self.max_speed)) / speed
        return last.with_points(last.points + step * np.float32(keep))

