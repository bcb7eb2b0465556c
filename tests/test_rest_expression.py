"""The driver's rest expression: a face the app calibrated on by itself is refined over the next frames.

A driver caught mid-word (pursed lips, raised brows) at the frame the app anchors on would otherwise
give every later frame the opposite expression: a wide, open mouth on the avatar when the driver's is
at rest (measured on a real clip: docs/MOTION_REST.md §1).
"""

from __future__ import annotations

import numpy as np
import pytest

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks
from avatar_app.face.align import similarity_fit
from avatar_app.face.mesh import mouth_opening, topology
from avatar_app.face.retarget import Retargeter, RetargetOptions, inter_ocular
from avatar_app.runtime.face_loss import DriverGuard

MID_WORD = FacePose(pucker=0.8, brows=0.6, jaw=0.2)


def _talking(n: int, yaw_amp: float = 0.0) -> list:
    """``n`` frames of someone talking: at rest two frames in three, the mouth open in the third."""
    return [synthetic_landmarks(FacePose(jaw=0.6 if k % 3 == 2 else 0.0, yaw=yaw_amp * np.sin(k / 5)))
            for k in range(n)]


def _width(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[61, :2] - points[291, :2])) / inter_ocular(points)


def _off_shape(points: np.ndarray, source: np.ndarray) -> float:
    """How far ``points`` are from the source's own face once a head pose (similarity) is undone (px)."""
    s, rot, t = similarity_fit(points.astype(np.float64), source.astype(np.float64))
    return float(np.abs(s * points @ rot.T + t - source).max())


def test_a_face_caught_mid_word_is_not_taken_for_the_rest(astronaut_source):
    src = astronaut_source.landmarks
    settled, given = Retargeter(src), Retargeter(src)
    settled.calibrate(synthetic_landmarks(MID_WORD), settle=True)
    given.calibrate(synthetic_landmarks(MID_WORD))
    for face in _talking(59):
        settled(face)
        given(face)
    rest = synthetic_landmarks(FacePose())
    out, old = settled(rest).points, given(rest).points
    # at rest, the avatar is the portrait at rest (in the head pose the pucker's forehead gives) ...
    assert _off_shape(out, src.points) < 0.1
    # ... where the frame taken as given makes the opposite of a pucker: a wider mouth, lower brows
    assert _width(old) > _width(src.points) + 0.05
    assert _off_shape(old, src.points) > 2.0
    # and the mouth still follows, by as much as from a calibration on the rest itself (the
    # pucker's forehead makes the scale a few per cent different)
    opened = synthetic_landmarks(FacePose(jaw=0.6))
    at_rest = Retargeter(src)
    at_rest.calibrate(rest)
    want = mouth_opening(at_rest(opened).points) - mouth_opening(src.points)
    assert mouth_opening(settled(opened).points) - mouth_opening(src.points) == pytest.approx(want, rel=0.08)


def test_the_head_pose_is_measured_from_the_calibration_frame(astronaut_source):
    """While the rest settles, head motion is what it was: the rigid points (which an open jaw
    leaves alone) land where the calibration as given puts them."""
    src = astronaut_source.landmarks
    settled, given = Retargeter(src), Retargeter(src)
    settled.calibrate(synthetic_landmarks(FacePose(jaw=0.5)), settle=True)
    given.calibrate(synthetic_landmarks(FacePose(jaw=0.5)))
    rigid = topology().rigid
    for k, face in enumerate(_talking(80, yaw_amp=20.0)):
        a, b = settled(face).points[rigid], given(face).points[rigid]
        assert np.abs(a - b).max() < 0.05, f"frame {k}"
    # and with a first frame whose brows moved the forehead's rigid points (so its rest's differ)
    anchor = synthetic_landmarks(MID_WORD)
    settled.calibrate(anchor, settle=True)
    given.calibrate(anchor)
    for face in _talking(60, yaw_amp=20.0):
        settled(face)
    assert np.abs(settled.neutral.points[rigid] - anchor.points[rigid]).max() > 1.0
    for face in _talking(5, yaw_amp=20.0):
        for x, y in zip(settled.head_motion(face), given.head_motion(face)):
            assert np.allclose(x, y)


def test_a_calibration_the_user_asked_for_is_kept(astronaut_source):
    rt = Retargeter(astronaut_source.landmarks)
    anchor = synthetic_landmarks(MID_WORD)
    rt.calibrate(anchor)
    for face in _talking(60):
        rt(face)
    assert np.array_equal(rt.neutral.points, anchor.points)


def test_the_rest_settles_over_rest_frames_then_stays(astronaut_source):
    rt = Retargeter(astronaut_source.landmarks, RetargetOptions(rest_frames=10))
    rt.calibrate(synthetic_landmarks(MID_WORD), settle=True)
    for face in _talking(10):
        assert rt.settling
        rt(face)
    assert not rt.settling
    settled = rt.neutral.points.copy()
    assert np.abs(settled - synthetic_landmarks(MID_WORD).points).max() > 1.0  # the rest moved off the pucker
    for _ in range(20):  # a long grimace after the window: the rest no longer moves
        rt(synthetic_landmarks(FacePose(smile=1.0, jaw=1.0)))
    assert np.array_equal(rt.neutral.points, settled)


def test_rest_frames_zero_is_the_calibration_frame(astronaut_source):
    rt = Retargeter(astronaut_source.landmarks, RetargetOptions(rest_frames=0))
    anchor = synthetic_landmarks(MID_WORD)
    rt.calibrate(anchor, settle=True)
    for face in _talking(30):
        rt(face)
    assert np.array_equal(rt.neutral.points, anchor.points)
    with pytest.raises(ValueError, match="rest_frames"):
        RetargetOptions(rest_frames=-1)


def test_absolute_mode_is_the_drivers_face_whatever_the_rest(astronaut_source):
    src = astronaut_source.landmarks
    settled, given = (Retargeter(src, RetargetOptions(mode="absolute")) for _ in range(2))
    settled.calibrate(synthetic_landmarks(MID_WORD), settle=True)
    given.calibrate(synthetic_landmarks(MID_WORD))
    for face in _talking(40):
        assert np.abs(settled(face).points - given(face).points).max() < 0.05


def test_the_guard_settles_the_first_face_and_every_re_anchor(astronaut_source):
    """Both calibrations the guard makes by itself (the first face; a new face after a jump) settle."""
    src = astronaut_source.landmarks
    guard = DriverGuard(Retargeter(src))
    t, dt = 0.0, 1 / 25
    guard.update(t, synthetic_landmarks(MID_WORD), src)
    for face in _talking(60):
        t += dt
        guard.update(t, face, src)
    for _ in range(10):  # the speed limit lets the pose catch up
        t += dt
        shown = guard.update(t, synthetic_landmarks(FacePose()), src).points
    assert _off_shape(shown, src.points) < 0.1
    # a new person, far to the side and mid-word: held, re-anchored once it stays, then settled
    t += 2 * dt
    other = FacePose(pucker=0.8, brows=0.6, shift=(0.8, 0.0))
    jumps, until = guard.jumps, t + guard.settle_s + 2 * dt
    while t < until:  # re-anchored on the pucker, as the first face was
        t += dt
        guard.update(t, synthetic_landmarks(other), src)
    assert guard.jumps == jumps + 1 and guard.state == "tracking"
    for k in range(60):
        t += dt
        guard.update(t, synthetic_landmarks(FacePose(shift=(0.8, 0.0), jaw=0.6 if k % 3 == 2 else 0.0)), src)
    for _ in range(25):  # the blend after the re-anchor ends
        t += dt
        shown = guard.update(t, synthetic_landmarks(FacePose(shift=(0.8, 0.0))), src).points
    assert _off_shape(shown, src.points) < 0.1


def test_another_portrait_keeps_the_drivers_calibration_and_settling(astronaut_source, hopper_source):
    """Switching portraits (a profile, the wizard) mid-settling: the new portrait gets the same driver
    calibration, and the rest goes on settling as if nothing had changed."""
    rt = Retargeter(astronaut_source.landmarks)
    rt.calibrate(synthetic_landmarks(MID_WORD), settle=True)
    faces = _talking(60)
    for face in faces[:20]:
        rt(face)
    moved = rt.onto(hopper_source.landmarks)
    fresh = Retargeter(hopper_source.landmarks)
    fresh.calibrate(synthetic_landmarks(MID_WORD), settle=True)
    for face in faces[:20]:
        fresh(face)
    for face in faces[20:]:
        assert np.abs(moved(face).points - fresh(face).points).max() < 1e-3
    assert np.array_equal(moved.neutral.points, fresh.neutral.points)


def test_the_rest_moves_at_most_rest_step_a_frame(astronaut_source):
    """A pucker held for the first half of the window, then rest: the median flips from one to the
    other in one frame, the rest glides (REST_STEP inter-ocular distances a frame at most)."""
    from avatar_app.face.retarget import REST_STEP

    rt = Retargeter(astronaut_source.landmarks)
    anchor = synthetic_landmarks(MID_WORD)
    rt.calibrate(anchor, settle=True)
    iod = inter_ocular(anchor.points)
    faces = [synthetic_landmarks(MID_WORD)] * 30 + [synthetic_landmarks(FacePose())] * 30
    last = rt.neutral.points.astype(np.float64)
    for face in faces:
        rt(face)
        now = rt.neutral.points.astype(np.float64)
        assert np.linalg.norm(now - last, axis=1).max() <= REST_STEP * iod * 1.001 + 1e-4
        last = now


def test_a_recordings_rest_frame_is_neither_mid_word_nor_a_blink():
    """The frame a profile takes as its portrait and neutral (``rest_frame``): the face nearest the
    clip's median expression once zoom, roll and shift are undone, whatever frame comes first."""
    from avatar_app.face.retarget import rest_frame

    poses = [MID_WORD, FacePose(blink_left=1.0, blink_right=1.0), FacePose(jaw=0.7), FacePose(smile=0.6)]
    # a person at rest in every other frame, moving about (closer, tilted, off to the side), talking between
    at_rest = {k for k in range(4, 24) if k % 2 == 0}
    for k in range(4, 24):
        pose = dict(roll=8.0 * np.sin(k), scale=1.0 + 0.1 * np.cos(k), shift=(0.2 * np.sin(k / 3), 0.0))
        poses.append(FacePose(**pose) if k in at_rest else FacePose(jaw=0.3 + 0.02 * k, brows=0.3, **pose))
    faces = [synthetic_landmarks(p).points for p in poses]
    assert rest_frame(faces) in at_rest
    assert rest_frame(faces[4:]) + 4 in at_rest  # it does not depend on which frame comes first
    turned = [synthetic_landmarks(FacePose(yaw=30.0)).points] * 3 + faces[4:]
    assert rest_frame(turned) >= 3  # a turned head is no rest: its face is another shape in the image
    assert rest_frame(faces[:1]) == 0
