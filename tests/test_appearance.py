"""The face's look (face/appearance.py) on the two bundled portraits: another person is another
look wherever each face sits; the same face moved, smaller, 10 % brighter or half out of the frame is
not (a sudden exposure step of 20 % can be: docs/MOTION_UNSEEN.md §8.2)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from avatar_app.face.appearance import LookThresholds, face_look, is_other_look, look_change, look_score


@pytest.fixture(scope="module")
def faces(astronaut, hopper, still_tracker):
    return {"astronaut": (astronaut, still_tracker.detect_faces(astronaut)[0].points),
            "hopper": (hopper, still_tracker.detect_faces(hopper)[0].points)}


def moved(image: np.ndarray, points: np.ndarray, scale: float, dx: float, dy: float, gain: float = 1.0,
          size: tuple[int, int] = (640, 480)) -> tuple[np.ndarray, np.ndarray]:
    """``image`` zoomed by ``scale``, shifted by ``(dx, dy)`` px into a ``size`` frame, its light
    times ``gain``; ``points`` moved with it (exactly: no tracker in between)."""
    m = np.array([[scale, 0, dx], [0, scale, dy]], np.float32)
    out = cv2.warpAffine(image, m, size, flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(40, 40, 40))
    out = np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    pts = points.copy()
    pts[:, :2] = points[:, :2] * scale + [dx, dy]
    return out, pts


def test_the_same_face_moved_zoomed_or_brighter_keeps_its_look(faces):
    for name, (image, points) in faces.items():
        base = face_look(*moved(image, points, 1.0, 100, 0))
        for scale, dx, dy, gain in ((1.0, 130, 20, 1.0), (0.6, 200, 100, 1.0), (1.0, 100, 0, 1.1)):
            score = look_score(base, face_look(*moved(image, points, scale, dx, dy, gain)))
            assert score < LookThresholds().limit / 2, f"{name} x{scale} +({dx}, {dy}) gain {gain}: {score:.2f}"


def test_half_out_of_the_frame_is_compared_on_what_shows(faces):
    """The face's right part past the frame's left edge: the part outside is not a change of look
    (it would be, read off the grey border)."""
    image, points = faces["astronaut"]
    whole = face_look(*moved(image, points, 1.0, 100, 0))
    x_mid = float(np.median(points[:, 0]))
    cut_image, cut_points = moved(image, points, 1.0, -x_mid + 10, 0)  # the face's middle 10 px from the edge
    half = face_look(cut_image, cut_points)
    assert not half.skin_ok.all() and half.skin_ok.any() and not half.layout_ok.all()
    assert not is_other_look(whole, half), look_change(whole, half)


def test_another_person_is_another_look_at_the_same_place(faces):
    (a_img, a_pts), (h_img, h_pts) = faces["astronaut"], faces["hopper"]
    one, other = face_look(a_img, a_pts), face_look(h_img, h_pts)
    assert is_other_look(one, other) and is_other_look(other, one), look_change(one, other)
