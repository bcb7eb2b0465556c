"""Face lost / found behaviour (pure, driven by explicit times)."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_app.runtime.face_loss import EASING, HOLDING, NO_FACE, TRACKING, FaceLossSmoother
from avatar_app.types import NUM_LANDMARKS, Landmarks


def _pose(value: float) -> Landmarks:
    return Landmarks(np.full((NUM_LANDMARKS, 3), value, np.float32), (256, 256))


NEUTRAL = _pose(0.0)


def test_no_face_yet_shows_neutral():
    s = FaceLossSmoother()
    out = s.update(0.0, None, NEUTRAL)
    assert s.state == NO_FACE and np.array_equal(out.points, NEUTRAL.points)


def test_tracking_passes_targets_through():
    s = FaceLossSmoother()
    for t, v in [(0.0, 1.0), (0.03, 2.0), (0.06, 3.0)]:
        out = s.update(t, _pose(v), NEUTRAL)
        assert s.state == TRACKING and out.points[0, 0] == v


def test_hold_then_ease_to_neutral():
    s = FaceLossSmoother(hold_s=0.5, ease_s=1.0)
    s.update(0.0, _pose(10.0), NEUTRAL)
    held = s.update(0.3, None, NEUTRAL)  # the face is missed from here on
    assert s.state == HOLDING and held.points[0, 0] == 10.0
    assert s.update(0.75, None, NEUTRAL).points[0, 0] == 10.0  # still holding
    mid = s.update(1.3, None, NEUTRAL)  # 0.5 s hold + half of the 1 s ease
    assert s.state == EASING and mid.points[0, 0] == pytest.approx(5.0)
    done = s.update(2.0, None, NEUTRAL)
    assert done.points[0, 0] == pytest.approx(0.0)
    values = [s.update(t, None, NEUTRAL).points[0, 0] for t in np.linspace(2.0, 3.0, 5)]
    assert all(v == pytest.approx(0.0) for v in values)


def test_resume_blends_instead_of_jumping():
    s = FaceLossSmoother(hold_s=0.2, ease_s=0.4, resume_s=0.25)
    s.update(0.0, _pose(10.0), NEUTRAL)
    s.update(0.1, None, NEUTRAL)
    shown = s.update(1.0, None, NEUTRAL).points[0, 0]  # fully eased to neutral
    assert shown == pytest.approx(0.0)
    first = s.update(1.01, _pose(10.0), NEUTRAL).points[0, 0]
    assert s.state == TRACKING and 0.0 <= first < 1.0  # starts from what was shown
    later = s.update(1.2, _pose(10.0), NEUTRAL).points[0, 0]
    assert first < later < 10.0
    assert s.update(1.3, _pose(10.0), NEUTRAL).points[0, 0] == 10.0  # blend finished


def test_losing_the_face_again_during_resume_holds_what_was_shown():
    s = FaceLossSmoother(hold_s=0.2, ease_s=0.4, resume_s=1.0)
    s.update(0.0, _pose(10.0), NEUTRAL)
    s.update(0.1, None, NEUTRAL)
    s.update(1.0, None, NEUTRAL)
    shown = s.update(1.5, _pose(10.0), NEUTRAL).points[0, 0]
    assert s.update(1.55, None, NEUTRAL).points[0, 0] == pytest.approx(shown)


def _driver(pose=None):
    from avatar_app.capture.synthetic import FacePose, synthetic_landmarks

    return synthetic_landmarks(pose or FacePose())


def test_a_jump_never_reaches_the_avatar_and_the_new_face_is_re_anchored(astronaut_source):
    from avatar_app.capture.synthetic import FacePose
    from avatar_app.face.retarget import Retargeter
    from avatar_app.runtime.face_loss import SETTLING, DriverGuard

    src = astronaut_source.landmarks
    guard = DriverGuard(Retargeter(src), FaceLossSmoother(hold_s=0.2, ease_s=0.4, resume_s=0.2), settle_s=0.5)
    shown = [guard.update(i / 30, _driver(), src) for i in range(10)]
    assert guard.state == TRACKING
    cut = FacePose(yaw=20, shift=(0.8, 0.2), scale=1.7)  # a shot cut: elsewhere, bigger, turned
    for i in range(10, 60):
        shown.append(guard.update(i / 30, _driver(cut), src))
        if i < 20:
            assert guard.state == SETTLING
    assert guard.jumps == 1 and guard.state == TRACKING
    steps = [np.abs(b.points - a.points).max() for a, b in zip(shown[:-1], shown[1:])]
    assert max(steps) < 2.0  # px per frame at 256: eased, never carried over
    # re-anchored: the new face at rest is the avatar's neutral
    assert np.abs(shown[-1].points - src.points).max() < 1.0


def test_a_cut_the_tracker_saw_is_a_jump_even_where_the_face_stays(astronaut_source):
    """A face the tracker flags as a cut (its raw landmarks jumped) is a jump for the guard, even
    when the smoothed landmarks it gets barely moved: it holds, then re-anchors."""
    from avatar_app.face.retarget import Retargeter
    from avatar_app.runtime.face_loss import SETTLING, DriverGuard

    src = astronaut_source.landmarks
    guard = DriverGuard(Retargeter(src), settle_s=0.5)
    for i in range(10):
        guard.update(i / 30, _driver(), src)
    guard.update(10 / 30, _driver(), src, cut=True)
    assert guard.jumps == 1 and guard.state == SETTLING
    for i in range(11, 40):
        guard.update(i / 30, _driver(), src)
    assert guard.jumps == 1 and guard.state == TRACKING


def test_natural_motion_is_not_a_jump():
    from avatar_app.capture.synthetic import timeline_pose
    from avatar_app.runtime.face_loss import is_jump

    frames = [_driver(timeline_pose(t / 30)) for t in range(400)]
    assert not any(is_jump(a, b, 1 / 30) for a, b in zip(frames[:-1], frames[1:]))


def _steps(poses) -> np.ndarray:
    """Median point displacement between consecutive poses, in face sizes (the stress checks' measure)."""
    from avatar_app.face.mesh import face_motion

    return np.array([face_motion(a.points, b.points) for a, b in zip(poses[:-1], poses[1:])])


def test_a_blend_into_a_re_anchored_face_never_outruns_the_driver(astronaut_source):
    """After each cut of the synthetic driver the avatar glides from the held pose into the new face
    while that face keeps moving: a frame moves no further than the driver's target did, or the
    guard's own transition speed where that is more (the blend alone used to add up to 0.05 face
    sizes a frame to a driver moving 0.035)."""
    from avatar_app.capture import stress
    from avatar_app.face.retarget import Retargeter
    from avatar_app.runtime.face_loss import DriverGuard

    class Recording(Retargeter):
        def __call__(self, driver):
            self.last = super().__call__(driver)
            return self.last

    src = astronaut_source.landmarks
    driver = stress.synthetic_cut(shots=stress.random_shots(7), talk_seed=7)
    guard = DriverGuard(Recording(src))
    fps = driver.fps
    shown, targets = [], []  # what the avatar showed, and the driver's retargeted face (None while settling)
    for f in driver.frames:
        guard.retarget.last = None
        shown.append(guard.update(f.timestamp, f.landmarks, src))
        targets.append(guard.retarget.last)
    assert guard.jumps == 3
    own = np.array([0.0 if a is None or b is None else _steps([a, b])[0] for a, b in zip(targets[:-1], targets[1:])])
    allowed = np.maximum(own, guard.transition_speed / fps)
    moved = _steps(shown)
    assert (moved <= allowed + 1e-4).all(), f"{(moved - allowed).max():.4f} face sizes over, frame {(moved - allowed).argmax()}"
    blending = (own > 0) & (moved > 0) & (np.abs(moved - own) > 1e-4)  # frames where the avatar was not where the target was
    assert blending.sum() >= 10  # the blends happened (re-anchored, not jumped)
    last = driver.frames[-1]
    for k in range(1, 61):  # the last face stays still for 2 s: the avatar arrives where it is
        out = guard.update(last.timestamp + k / fps, last.landmarks, src)
    assert _steps([out, guard.retarget.last])[0] < 1e-3


def test_a_hold_after_fast_motion_stays_where_the_avatar_was(astronaut_source):
    """A head moving faster than the speed limit lets the avatar fall behind; when the face is then lost the
    avatar holds what it *showed*, not a step towards where the driver had got to."""
    from avatar_app.capture.synthetic import FacePose
    from avatar_app.face.retarget import Retargeter
    from avatar_app.runtime.face_loss import DriverGuard

    src = astronaut_source.landmarks
    guard = DriverGuard(Retargeter(src), max_speed=2.0)  # its knee at 1.2 face sizes/s, 0.04 a frame
    shown = [guard.update(i / 30, _driver(), src) for i in range(10)]
    for i in range(10, 20):  # about 0.06 face sizes a frame: past the knee, under the jump test
        shown.append(guard.update(i / 30, _driver(FacePose(shift=(0.12 * (i - 9), 0.0))), src))
    assert guard.jumps == 0 and _steps(shown[9:])[-1] > 0.04
    states = []
    for i in range(20, 40):
        shown.append(guard.update(i / 30, None, src))
        states.append(guard.smoother.state)
    held = [k for k, s in enumerate(states, start=20) if s == HOLDING]
    assert len(held) >= 10
    assert max(np.abs(shown[k].points - shown[19].points).max() for k in held) == 0.0
