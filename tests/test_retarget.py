"""Retargeting: relative motion from the driver's neutral, transferred onto the source."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks
from avatar_app.face.align import similarity_fit
from avatar_app.face.mesh import NOSE_TIP, mouth_opening, topology
from avatar_app.face.retarget import Retargeter, RetargetOptions
from avatar_app.types import Landmarks


def _rot_z(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def _source_from(driver_neutral: Landmarks, scale: float, roll: float = 0.0, shift=(40.0, -20.0, 0.0)) -> Landmarks:
    """A source face: the driver's neutral face scaled, rolled and moved (crop px)."""
    p = driver_neutral.points.astype(np.float64)
    c = p.mean(0)
    q = (p - c) @ _rot_z(roll).T * scale + c + np.array(shift)
    return Landmarks(q.astype(np.float32), (512, 512))


@pytest.fixture()
def neutral() -> Landmarks:
    return synthetic_landmarks(FacePose())


def test_neutral_driver_gives_the_source_unchanged(astronaut_source, neutral):
    rt = Retargeter(astronaut_source.landmarks)
    rt.calibrate(neutral)
    out = rt(neutral)
    assert np.abs(out.points - astronaut_source.landmarks.points).max() < 1e-3


def test_first_frame_calibrates_automatically(astronaut_source):
    rt = Retargeter(astronaut_source.landmarks)
    first = synthetic_landmarks(FacePose(yaw=10, jaw=0.3))
    assert not rt.calibrated
    out = rt(first)
    assert rt.calibrated
    assert np.abs(out.points - astronaut_source.landmarks.points).max() < 1e-3


def test_expression_offsets_scale_with_face_size(neutral):
    opened = synthetic_landmarks(FacePose(jaw=1.0))
    driver_delta = mouth_opening(opened.points) - mouth_opening(neutral.points)
    for scale in (0.5, 2.0):
        src = _source_from(neutral, scale)
        rt = Retargeter(src)
        rt.calibrate(neutral)
        out = rt(opened)
        delta = mouth_opening(out.points) - mouth_opening(src.points)
        assert delta == pytest.approx(driver_delta * scale, rel=0.02)


def test_head_roll_is_transferred_in_the_source_frame(neutral):
    """A source tilted by 25° that the driver rolls by +10° ends up tilted by 35°."""
    src = _source_from(neutral, 1.3, roll=25.0)
    rt = Retargeter(src)
    rt.calibrate(neutral)
    out = rt(synthetic_landmarks(FacePose(roll=10.0)))
    rigid = topology().rigid
    _, rot, _ = similarity_fit(neutral.points[rigid], out.points[rigid])
    angle = np.degrees(np.arctan2(rot[1, 0], rot[0, 0]))
    assert angle == pytest.approx(35.0, abs=0.5)


@pytest.mark.parametrize("yaw", [-20.0, 20.0])
def test_head_turn_goes_the_same_way(astronaut_source, neutral, yaw):
    rt = Retargeter(astronaut_source.landmarks)
    rt.calibrate(neutral)
    out = rt(synthetic_landmarks(FacePose(yaw=yaw))).points
    src = astronaut_source.landmarks.points
    oval = topology().face_oval

    def nose_offset(p):
        return p[NOSE_TIP, 0] - p[oval, 0].mean()

    moved = nose_offset(out) - nose_offset(src)
    assert np.sign(moved) == np.sign(yaw) and abs(moved) > 5.0


def test_rotation_scale_zero_keeps_pose_but_transfers_expression(astronaut_source, neutral):
    rt = Retargeter(astronaut_source.landmarks, RetargetOptions(rotation_scale=0.0, translation_scale=0.0,
                                                                 transfer_scale=False))
    rt.calibrate(neutral)
    out = rt(synthetic_landmarks(FacePose(yaw=25.0, pitch=10.0, jaw=1.0))).points
    src = astronaut_source.landmarks.points
    rigid = topology().rigid
    assert np.abs(out[rigid] - src[rigid]).max() < 2.0  # the skull stays put
    assert mouth_opening(out) > mouth_opening(src) + 5.0  # the mouth still opens


def test_translation_is_scaled_to_the_source_face(neutral):
    src = _source_from(neutral, 0.5)
    rt = Retargeter(src, RetargetOptions(motion_limits=False))
    rt.calibrate(neutral)
    moved = synthetic_landmarks(FacePose(shift=(0.3, 0.0)))
    driver_dx = float(np.mean(moved.points[:, 0] - neutral.points[:, 0]))
    out = rt(moved)
    dx = float(np.mean(out.points[:, 0] - src.points[:, 0]))
    assert dx == pytest.approx(0.5 * driver_dx, rel=0.02)


def test_absolute_mode_takes_the_driver_shape(astronaut_source, neutral):
    rt = Retargeter(astronaut_source.landmarks, RetargetOptions(mode="absolute"))
    rt.calibrate(neutral)
    out = rt(neutral).points
    src = astronaut_source.landmarks.points
    # aligned onto the source, but with the driver's proportions: the shape differs from
    # the source's while a similarity maps the driver's neutral onto it exactly
    s, rot, t = similarity_fit(neutral.points, out)
    assert np.abs(s * neutral.points @ rot.T + t - out).max() < 1e-2
    assert np.abs(out - src).max() > 2.0


def test_bad_mode_is_rejected():
    with pytest.raises(ValueError, match="relative"):
        RetargetOptions(mode="sideways")


def test_soft_limit_is_smooth_and_saturates():
    from avatar_app.face.retarget import soft_limit

    x = np.linspace(-200, 200, 4001)
    y = soft_limit(x, 30.0, 0.6)
    assert np.all(np.diff(y) > 0)  # monotonic: never sticks
    assert np.abs(y).max() < 30.0  # never reaches the limit
    small = np.abs(x) <= 18.0
    assert np.allclose(y[small], x[small])  # untouched below the knee
    slope = np.diff(y) / np.diff(x)
    assert np.abs(np.diff(slope)).max() < 0.01  # no kink (no hard clip)


@pytest.mark.parametrize("pose, check", [
    (FacePose(yaw=80), "yaw"), (FacePose(pitch=60), "pitch"), (FacePose(scale=3.0), "zoom"),
    (FacePose(scale=0.3), "zoom"), (FacePose(shift=(1.5, 0.0)), "shift"),
])
def test_head_motion_stays_inside_the_limits(astronaut_source, neutral, pose, check):
    from avatar_app.face.retarget import MOTION_LIMITS, inter_ocular

    src = astronaut_source.landmarks
    rt = Retargeter(src)
    rt.calibrate(neutral)
    out = rt(synthetic_landmarks(pose)).points.astype(np.float64)
    rig = topology().rigid
    s, rot, t = similarity_fit(src.points[rig].astype(np.float64), out[rig])
    if check == "zoom":
        assert 1 / MOTION_LIMITS.zoom < s < MOTION_LIMITS.zoom
    elif check == "shift":
        moved = np.linalg.norm(out[rig, :2].mean(0) - src.points[rig, :2].mean(0)) / inter_ocular(src.points)
        assert moved < MOTION_LIMITS.shift * 1.05
    else:
        angle = np.degrees(np.arccos(np.clip((np.trace(rot) - 1) / 2, -1, 1)))
        assert angle < getattr(MOTION_LIMITS, check) * 1.05
