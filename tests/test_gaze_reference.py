"""tools/gaze_reference.py --hold: what the gaze measure reads on an eye held perfectly still."""

from __future__ import annotations

import cv2
import numpy as np

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks
from avatar_app.face.eyes import CLOSED_EYES, horizontal_gaze

from conftest import load_tool


def _similarity(angle: float, scale: float, shift: tuple[float, float], centre: float) -> np.ndarray:
    m = cv2.getRotationMatrix2D((centre, centre), angle, scale)
    m[:, 2] += shift
    return m


def _moved(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    out = np.array(points, np.float32, copy=True)
    out[:, :2] = points[:, :2] @ m[:, :2].T + m[:, 2]
    return out


def test_the_face_moves_rigidly_whatever_its_expression():
    rigidly_moved = load_tool("gaze_reference").rigidly_moved
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur((rng.random((480, 640, 3)) * 255).astype(np.uint8), (0, 0), 2.0)
    points = synthetic_landmarks(FacePose()).points
    m = _similarity(7.0, 1.1, (3.0, -2.0), 320.0)
    # the target's face is the source's moved by m, with an expression (176 points move by 1 to 16 px, not the head)
    target = _moved(synthetic_landmarks(FacePose(jaw=0.6, smile=0.6, blink_left=1.0)).points, m)
    got = rigidly_moved(image, points, target).astype(np.int32)
    want = cv2.warpAffine(image, m, (640, 480), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(got - want)[40:440, 40:600].mean() < 1.5  # the texture's grey levels span ~100
    assert np.abs(got - image)[40:440, 40:600].mean() > 10  # (it did move)


class _Clip:
    """What hold_floor reads of a prepared clip: frames and their landmarks."""

    def __init__(self, frames, landmarks):
        self.frames, self.landmarks = frames, np.stack(landmarks)

    def image(self, index):
        return self.frames[index]


def test_an_eye_that_only_slides_reads_near_its_own_gaze(astronaut_source, still_tracker):
    tool = load_tool("gaze_reference")
    src = astronaut_source.crop
    pts = np.asarray(astronaut_source.landmarks.points)
    frames, marks = [src], [pts]
    for k, (angle, scale, dx) in enumerate([(3.0, 1.02, 2.0), (-4.0, 0.97, -3.0), (0.0, 1.05, 1.0)]):
        m = _similarity(angle, scale, (dx, 1.0), src.shape[0] / 2)
        frames.append(cv2.warpAffine(src, m, src.shape[1::-1], borderMode=cv2.BORDER_REPLICATE))
        marks.append(_moved(pts, m))
    frames.append(np.zeros_like(src))  # no face in the driver's frame: not scored
    marks.append(pts)
    got = tool.hold_floor(still_tracker, _Clip(frames, marks), 0, [1, 2, 3, 4])
    found = still_tracker.detect_faces(src)[0].points
    assert got["gaze"] == horizontal_gaze(np.asarray(found))
    assert got["open"] >= CLOSED_EYES
    assert 0.0 <= got["floor"] <= got["floor_p95"] < 0.03  # the detector's own noise, not a look away
    assert tool.hold_floor(still_tracker, _Clip([np.zeros_like(src)] * 2, [pts, pts]), 0, [1]) is None
