"""The procedural synthetic driver: posed landmarks, the scripted timeline, the frame source."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_app.capture.synthetic import FacePose, SyntheticDriver, synthetic_landmarks, timeline_pose
from avatar_app.face.mesh import NOSE_TIP, eye_centers, mouth_opening, topology
from avatar_app.types import NUM_LANDMARKS, Frame, Landmarks

EYE_PX = 64.0  # synthetic_landmarks' default eye distance


def lm(**kw) -> np.ndarray:
    return synthetic_landmarks(FacePose(**kw)).points


def eyelid_gap(points: np.ndarray, side: str = "right") -> float:
    topo = topology()
    up = getattr(topo, f"{side}_eye_upper")[1:-1]
    lo = getattr(topo, f"{side}_eye_lower")[1:-1]
    return float(np.mean(points[lo, 1] - points[up, 1]))


def nose_from_oval(points: np.ndarray) -> np.ndarray:
    return points[NOSE_TIP, :2] - points[topology().face_oval, :2].mean(axis=0)


# -- synthetic_landmarks -------------------------------------------------------------------


def test_neutral_landmarks_are_valid():
    out = synthetic_landmarks(FacePose())
    assert isinstance(out, Landmarks)
    assert out.points.shape == (NUM_LANDMARKS, 3)
    assert out.points.dtype == np.float32
    assert out.image_size == (640, 480)
    assert np.isfinite(out.points).all()
    x, y = out.xy[:, 0], out.xy[:, 1]
    assert x.min() >= 0 and x.max() < 640 and y.min() >= 0 and y.max() < 480
    # frontal, non-mirrored: the subject's right eye is on the image's left, eyes level
    eye_r, eye_l = eye_centers(out.xy)
    assert eye_r[0] < eye_l[0]
    assert np.linalg.norm(eye_l - eye_r) == pytest.approx(EYE_PX, rel=0.15)
    assert abs(eye_l[1] - eye_r[1]) < 0.5
    # nose below the eyes, chin below the nose
    assert out.xy[NOSE_TIP, 1] > eye_r[1] and out.xy[152, 1] > out.xy[NOSE_TIP, 1]


def test_image_size_and_eye_distance_are_honoured():
    out = synthetic_landmarks(FacePose(), image_size=(320, 240), eye_distance_px=32.0)
    assert out.image_size == (320, 240)
    eye_r, eye_l = eye_centers(out.xy)
    assert np.linalg.norm(eye_l - eye_r) == pytest.approx(32.0, rel=0.15)
    assert out.xy[:, 0].max() < 320 and out.xy[:, 1].max() < 240 and out.xy.min() >= 0


def test_jaw_opens_the_inner_lips():
    neutral = mouth_opening(lm())
    open_ = mouth_opening(lm(jaw=1.0))
    half = mouth_opening(lm(jaw=0.5))
    assert open_ > max(5 * neutral, 0.2 * EYE_PX)
    assert neutral < half < open_


@pytest.mark.parametrize("side", ["right", "left"])
def test_blink_closes_the_eye(side):
    neutral = lm()
    closed = lm(**{f"blink_{side}": 1.0})
    other = "left" if side == "right" else "right"
    g0, g1 = eyelid_gap(neutral, side), eyelid_gap(closed, side)
    assert g0 > 0.05 * EYE_PX  # the neutral eye is open
    assert g1 < 0.3 * g0  # shrinks by more than 70 %
    # the other eye stays open
    assert eyelid_gap(closed, other) == pytest.approx(eyelid_gap(neutral, other), rel=0.05)


def test_positive_yaw_moves_nose_to_image_right():
    base = nose_from_oval(lm())
    right = nose_from_oval(lm(yaw=20.0))
    left = nose_from_oval(lm(yaw=-20.0))
    assert right[0] > base[0] + 0.1 * EYE_PX
    assert left[0] < base[0] - 0.1 * EYE_PX


def test_positive_pitch_moves_nose_down():
    base = lm()
    down = lm(pitch=15.0)
    up = lm(pitch=-15.0)
    assert down[NOSE_TIP, 1] > base[NOSE_TIP, 1] + 0.1 * EYE_PX
    assert up[NOSE_TIP, 1] < base[NOSE_TIP, 1] - 0.1 * EYE_PX
    assert nose_from_oval(down)[1] > nose_from_oval(base)[1] > nose_from_oval(up)[1]


def test_positive_roll_tilts_clockwise_on_screen():
    eye_r, eye_l = eye_centers(lm(roll=10.0)[:, :2])
    d = eye_l - eye_r
    # clockwise on screen (y down) = the eye line turns to a positive angle
    assert np.degrees(np.arctan2(d[1], d[0])) == pytest.approx(10.0, abs=1.5)


# -- timeline_pose -------------------------------------------------------------------------


def sample_window(seed: int = 0, t0: float = 1.0, seconds: float = 12.0, fps: float = 30.0) -> list[FacePose]:
    return [timeline_pose(t0 + i / fps, seed) for i in range(int(seconds * fps))]


def test_timeline_is_neutral_for_the_first_second():
    for t in np.linspace(0.0, 0.999, 31):
        assert timeline_pose(float(t)) == FacePose()
        assert timeline_pose(float(t), seed=7) == FacePose()
    assert timeline_pose(2.5) != FacePose()


def test_timeline_contains_the_scripted_motions():
    poses = sample_window()
    blink = np.array([max(p.blink_left, p.blink_right) for p in poses])
    jaw = np.array([p.jaw for p in poses])
    yaw = np.array([p.yaw for p in poses])
    smile = np.array([p.smile for p in poses])
    pitch = np.array([p.pitch for p in poses])
    assert blink.max() > 0.8, "no blink in 12 s"
    assert jaw.max() > 0.3
    assert np.abs(yaw).max() > 15.0
    assert smile.max() > 0.5
    assert np.abs(pitch).max() > 5.0
    # all controls stay in their ranges
    for arr in (blink, jaw, smile):
        assert arr.min() >= 0.0 and arr.max() <= 1.0


def test_timeline_landmarks_stay_in_frame():
    for p in sample_window(fps=5.0):
        pts = synthetic_landmarks(p).points
        assert np.isfinite(pts).all()
        assert pts[:, 0].min() >= 0 and pts[:, 0].max() < 640
        assert pts[:, 1].min() >= 0 and pts[:, 1].max() < 480


def test_timeline_is_deterministic_per_seed():
    a = sample_window(seed=3)
    assert a == sample_window(seed=3)
    assert a != sample_window(seed=4)


# -- SyntheticDriver -----------------------------------------------------------------------


def test_driver_yields_frames_with_landmarks():
    size = (320, 240)
    drv = SyntheticDriver(fps=10, duration=2, size=size)
    assert drv.frame_count == 20
    assert drv.fps == 10.0
    assert drv.frame_size == size
    frames = list(drv)
    assert len(frames) == 20 == drv.frame_count
    for i, fr in enumerate(frames):
        assert isinstance(fr, Frame)
        assert fr.index == i
        assert fr.timestamp == pytest.approx(i / 10.0)
        assert fr.image.shape == (240, 320, 3) and fr.image.dtype == np.uint8
        assert fr.landmarks is not None and fr.landmarks.image_size == size
        # the mesh is drawn: many pixels differ from the flat background
        assert (fr.image != fr.image[0, 0]).any(axis=2).mean() > 0.01
        # and drawn where the landmarks are
        cx, cy = np.round(fr.landmarks.xy.mean(axis=0)).astype(int)
        patch = fr.image[cy - 20 : cy + 20, cx - 20 : cx + 20]
        assert (patch != fr.image[0, 0]).any(axis=2).any()
    ts = [f.timestamp for f in frames]
    assert all(b > a for a, b in zip(ts, ts[1:]))


def test_driver_frame_at_matches_iteration_and_timeline():
    drv = SyntheticDriver(fps=10, duration=2, seed=5)
    frames = list(drv)
    again = drv.frame_at(13)
    np.testing.assert_array_equal(again.image, frames[13].image)
    np.testing.assert_array_equal(again.landmarks.points, frames[13].landmarks.points)
    expected = synthetic_landmarks(timeline_pose(1.3, 5), (640, 480))
    np.testing.assert_array_equal(again.landmarks.points, expected.points)


def test_driver_without_render_gives_blank_images():
    drv = SyntheticDriver(fps=10, duration=0.5, size=(64, 48), render=False)
    frames = list(drv)
    assert len(frames) == 5
    assert all(not f.image.any() for f in frames)
    assert all(f.landmarks is not None for f in frames)


def test_driver_close_stops_iteration():
    drv = SyntheticDriver(fps=10, duration=None)
    assert drv.frame_count is None
    got = []
    for fr in drv:
        got.append(fr)
        if len(got) == 3:
            drv.close()
        assert len(got) < 50, "close() did not stop the endless driver"
    assert len(got) == 3
    # reopening starts over
    drv.open()
    it = iter(drv)
    assert next(it).index == 0
    drv.close()
    with pytest.raises(StopIteration):
        next(it)
