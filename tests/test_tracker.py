"""The mediapipe face tracker on real faces (no mocks)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar_app.capture.synthetic import SyntheticDriver
from avatar_app.errors import InputFileError
from avatar_app.face.align import CropStabilizer, face_crop_box, warp_to_crop
from avatar_app.face.mesh import NOSE_TIP, eye_centers, mouth_center
from avatar_app.face.tracker import FaceTracker
from avatar_app.types import NUM_LANDMARKS, Frame, Landmarks

FPS = 30.0


def in_canvas(image: np.ndarray, w: int = 640, h: int = 480) -> np.ndarray:
    """``image`` centred on a dark ``w``x``h`` canvas (cropped if larger)."""
    canvas = np.full((h, w, 3), 30, np.uint8)
    ih, iw = min(h, image.shape[0]), min(w, image.shape[1])
    x0, y0 = (w - iw) // 2, (h - ih) // 2
    canvas[y0 : y0 + ih, x0 : x0 + iw] = image[:ih, :iw]
    return canvas


@pytest.fixture(scope="module")
def astro_canvas(astronaut) -> np.ndarray:
    return in_canvas(astronaut)


def smooth_noise(h: int = 480, w: int = 640, seed: int = 0) -> np.ndarray:
    """A smooth random colour field (low-frequency noise blown up), no face."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


# -- detect_faces ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut", "hopper"])
def test_detect_faces_on_real_portraits(request, still_tracker, name):
    image = request.getfixturevalue(name)
    h, w = image.shape[:2]
    faces = still_tracker.detect_faces(image)
    assert len(faces) == 1
    lm = faces[0]
    assert isinstance(lm, Landmarks)
    assert lm.points.shape == (NUM_LANDMARKS, 3) and lm.points.dtype == np.float32
    assert np.isfinite(lm.points).all()
    assert lm.image_size == (w, h)
    x, y = lm.xy[:, 0], lm.xy[:, 1]
    assert x.min() >= 0 and x.max() < w and y.min() >= 0 and y.max() < h
    assert lm.confidence == pytest.approx(1.0)
    # a plausible face: subject's right eye on the image left, nose between eyes and mouth
    eye_r, eye_l = eye_centers(lm.xy)
    eye_dist = np.linalg.norm(eye_l - eye_r)
    assert eye_r[0] < eye_l[0]
    assert 0.08 * w < eye_dist < 0.5 * w
    mouth = mouth_center(lm.xy)
    assert (eye_r[1] + eye_l[1]) / 2 < lm.xy[NOSE_TIP, 1] < mouth[1]


@pytest.mark.parametrize(
    "image",
    [np.zeros((480, 640, 3), np.uint8), smooth_noise(), np.random.default_rng(1).integers(0, 256, (480, 640, 3), np.uint8)],
    ids=["black", "smooth-noise", "white-noise"],
)
def test_detect_faces_without_a_face(still_tracker, image):
    assert still_tracker.detect_faces(image) == []


def test_detect_faces_then_again_on_a_face(still_tracker, hopper):
    # a face-less image in between does not break the still tracker
    assert still_tracker.detect_faces(np.zeros((100, 100, 3), np.uint8)) == []
    assert len(still_tracker.detect_faces(hopper)) == 1


# -- track ---------------------------------------------------------------------------------------


def test_track_still_face_gives_a_still_crop(astro_canvas):
    with FaceTracker() as tracker:
        stab = CropStabilizer()
        boxes, crops = [], []
        for i in range(36):
            res = tracker.track(Frame(astro_canvas.copy(), i / FPS, i))
            assert res.found, f"face lost at frame {i}"
            assert res.confidence > 0.9
            assert res.timestamp == pytest.approx(i / FPS)
            assert res.landmarks.image_size == (640, 480)
            box = stab.update(face_crop_box(res.landmarks.points))
            boxes.append(box)
            crops.append(warp_to_crop(astro_canvas, box.image_to_crop(256), 256))
    assert all(b == boxes[-1] for b in boxes[-20:])
    for c in crops[-20:]:
        assert np.array_equal(c, crops[-1])
    # and the crop is on the face: centre between the eyes, inside the canvas
    assert 160 < boxes[-1].center[0] < 480 and 0 < boxes[-1].center[1] < 300


def test_raw_landmarks_on_identical_frames_barely_move(astro_canvas):
    with FaceTracker(smoothing=None) as tracker:
        pts = []
        for i in range(20):
            res = tracker.track(Frame(astro_canvas, i / FPS, i))
            assert res.found
            pts.append(res.landmarks.xy)
    pts = np.array(pts[2:])
    dev = np.abs(pts - np.median(pts, axis=0)).max()
    assert dev < 2.0, f"raw landmarks move {dev:.2f} px on identical frames"


def test_smoothed_landmarks_stay_near_raw_ones(astro_canvas, still_tracker):
    static = still_tracker.detect_faces(astro_canvas)[0].xy
    with FaceTracker() as tracker:
        for i in range(10):
            res = tracker.track(Frame(astro_canvas, i / FPS, i))
    eye_r, eye_l = eye_centers(static)
    # tracked vs. static detection of the same image: the same face within a few % of the eye distance
    assert np.abs(res.landmarks.xy - static).mean() < 0.05 * np.linalg.norm(eye_l - eye_r)


def test_track_lost_face_and_resume(astro_canvas):
    with FaceTracker() as tracker:
        i = 0
        for _ in range(5):
            assert tracker.track(Frame(astro_canvas, i / FPS, i)).found
            i += 1
        for blank in (np.zeros_like(astro_canvas), smooth_noise(seed=3)):
            res = tracker.track(Frame(blank, i / FPS, i))
            i += 1
            assert res.found is False
            assert res.landmarks is None
            assert res.confidence == 0.0
            assert res.timestamp == pytest.approx((i - 1) / FPS)
        found = []
        for _ in range(5):
            found.append(tracker.track(Frame(astro_canvas, i / FPS, i)).found)
            i += 1
        assert all(found), found


def test_track_after_reset_and_moved_face(hopper):
    """After reset() (a new video), a face elsewhere in the frame is found where it is."""
    left = np.full((480, 640, 3), 30, np.uint8)
    left[80:400, :320] = cv2.resize(hopper, (320, 320), interpolation=cv2.INTER_AREA)
    with FaceTracker() as tracker:
        for i in range(3):
            res = tracker.track(Frame(left, i / FPS, i))
            assert res.found
            assert res.landmarks.xy[:, 0].mean() < 320
        tracker.reset()
        right = np.ascontiguousarray(left[:, ::-1])
        res = tracker.track(Frame(right, 0.0, 0))
        assert res.found
        assert res.landmarks.xy[:, 0].mean() > 320


def test_a_second_larger_face_does_not_take_over(hopper):
    """README: with several faces in view the tracker follows the one nearest where yours was, not the largest
    (a person walking in behind, closer to the camera)."""
    frame = np.full((420, 700, 3), 30, np.uint8)
    frame[60:360, :256] = cv2.resize(hopper, (256, 300), interpolation=cv2.INTER_AREA)
    both = frame.copy()
    both[10:410, 359:700] = cv2.resize(hopper, (341, 400), interpolation=cv2.INTER_AREA)[:, ::-1]  # larger, mirrored
    with FaceTracker() as tracker:
        xs = [tracker.track(Frame(both if i >= 5 else frame, i / FPS, i)).landmarks.xy[:, 0].mean() for i in range(15)]
        assert len(tracker.detect_faces(both)) == 2  # both faces are there to be found
    assert all(x < 256 for x in xs), np.round(xs)  # the left face throughout (its landmarks' mean x about 142)


def test_synthetic_frames_pass_through(still_tracker):
    drv = SyntheticDriver(fps=10, duration=1)
    with FaceTracker() as tracker:
        for idx in (0, 7, 15):
            frame = drv.frame_at(idx)
            res = tracker.track(frame)
            assert res.landmarks is frame.landmarks
            assert res.found
            assert res.confidence == frame.landmarks.confidence
            assert res.timestamp == frame.timestamp
            np.testing.assert_array_equal(res.landmarks.points, drv.frame_at(idx).landmarks.points)


def test_missing_model_path_raises_input_file_error(tmp_path):
    missing = tmp_path / "nowhere" / "face_landmarker.task"
    with pytest.raises(InputFileError) as err:
        FaceTracker(model_path=missing)
    assert "face_landmarker.task" in str(err.value)


def test_garbage_model_file_raises_input_file_error(tmp_path, hopper):
    bad = tmp_path / "broken.task"
    bad.write_bytes(os.urandom(4096))
    tracker = FaceTracker(model_path=bad)
    try:
        with pytest.raises(InputFileError) as err:
            tracker.detect_faces(hopper)
        assert "broken.task" in str(err.value)
    finally:
        tracker.close()


def test_directory_as_model_path_raises_input_file_error(tmp_path: Path):
    with pytest.raises(InputFileError):
        FaceTracker(model_path=tmp_path)
