"""Landmark conditioning images: shape, range, rescaling, and what each channel shows."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks
from avatar_app.face.mesh import topology
from avatar_app.models.conditioning import (
    COND_CHANNELS,
    landmark_image,
    landmark_images,
)

EYES, MOUTH, GAZE = 3, 4, 5


def face(size: int = 256, **pose) -> np.ndarray:
    """Synthetic landmarks ``(478, 3)`` px of a ``size`` crop, eyes 60 px apart at 256."""
    return synthetic_landmarks(FacePose(**pose), (size, size), eye_distance_px=60 * size / 256).points


def iou(a: np.ndarray, b: np.ndarray, thr: float = 0.5) -> float:
    a, b = a > thr, b > thr
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("size", [256, 512])
def test_shape_dtype_range(size):
    img = landmark_image(face(size), size)
    assert img.shape == (COND_CHANNELS, size, size) and COND_CHANNELS == 6
    assert img.dtype == np.float32
    assert img.min() >= 0.0 and img.max() <= 1.0
    for ch in range(COND_CHANNELS):
        assert img[ch].max() > 0.5, f"channel {ch} is empty"
    # nothing far from the face
    assert img[:, :8, :].max() == 0 and img[:, :, :8].max() == 0


def test_deterministic_and_accepts_xy_only():
    pts = face(jaw=0.4)
    a, b = landmark_image(pts), landmark_image(pts.copy())
    assert np.array_equal(a, b)
    assert np.array_equal(a, landmark_image(pts[:, :2]))  # z is ignored


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError):
        landmark_image(np.zeros((468, 3), np.float32))
    with pytest.raises(ValueError):
        landmark_images(np.zeros((478, 3), np.float32))


def test_src_size_rescaling_matches_native_crop():
    p256 = face(jaw=0.6)
    p512 = (p256 + 0.5) * 2.0 - 0.5  # the same face in a 512 crop (pixel-centre convention)
    p512[:, 2] = p256[:, 2]
    native = landmark_image(p256, 256)
    rescaled = landmark_image(p512, 256, src_size=512)
    for ch in (EYES, MOUTH):
        assert iou(native[ch], rescaled[ch]) > 0.9
    assert np.abs(native - rescaled).mean() < 0.01

    # drawn at 512 and shrunk, the masks agree with the 256 drawing too
    big = landmark_image(p256, 512, src_size=256)
    for ch in (EYES, MOUTH):
        small = cv2.resize(big[ch], (256, 256), interpolation=cv2.INTER_AREA)
        assert iou(native[ch], small) > 0.9


def test_open_mouth_fills_mouth_channel():
    neutral = landmark_image(face())[MOUTH].sum()
    opened = landmark_image(face(jaw=1.0))[MOUTH].sum()
    assert opened > 5 * max(neutral, 1.0)
    assert opened > 500  # px


def test_blink_empties_eyes_and_gaze():
    open_ = landmark_image(face())
    shut = landmark_image(face(blink_left=1.0, blink_right=1.0))
    assert shut[EYES].sum() < 0.35 * open_[EYES].sum()
    assert shut[GAZE].sum() < 0.05 * open_[GAZE].sum()
    assert shut[GAZE].max() < 0.15
    assert open_[GAZE].max() > 0.9
    # one eye only: the other iris stays
    wink = landmark_image(face(blink_left=1.0))
    assert 0.4 * open_[GAZE].sum() < wink[GAZE].sum() < 0.6 * open_[GAZE].sum()


def test_gaze_follows_the_iris_and_stays_inside_the_eyes():
    pts = face(gaze=(0.4, 0.0))
    img = landmark_image(pts)
    topo = topology()
    for iris in (topo.right_iris, topo.left_iris):
        cx, cy = np.rint(pts[iris[0], :2]).astype(int)
        win = img[GAZE, cy - 1:cy + 2, cx - 1:cx + 2]
        assert win.max() > 0.8
    assert np.all(img[GAZE] <= img[EYES] + 1e-6)


def test_lines_light_up_along_the_face_oval_in_part_colours():
    pts = face()
    img = landmark_image(pts)
    topo = topology()
    lines = img[:3]

    def colour_at(i: int) -> np.ndarray:
        x, y = np.rint(pts[i, :2]).astype(int)
        patch = lines[:, y - 1:y + 2, x - 1:x + 2].reshape(3, -1)
        return patch[:, patch.sum(0).argmax()]

    oval = np.array([colour_at(i) for i in topo.face_oval])
    assert np.all(oval.min(axis=1) > 0.7)  # bright white all round
    lips = np.array([colour_at(i) for i in topo.lips_outer])
    assert np.median(lips[:, 0]) > 0.7 and np.median(lips[:, 1]) < 0.3  # red, not white
    # the skin mesh is faint: the cheek between contours is neither black everywhere nor bright
    cheek = lines[:, 120:140, 80:100]
    assert 0.0 < cheek.mean() < 0.3 and cheek.max() <= 0.3


def test_batch_equals_stacked_singles_and_accepts_tensors():
    poses = [{}, {"jaw": 0.8}, {"yaw": 20.0, "blink_right": 1.0}]
    pts = np.stack([face(**p) for p in poses])
    batch = landmark_images(pts, 256)
    assert isinstance(batch, torch.Tensor) and batch.dtype == torch.float32
    assert batch.shape == (3, COND_CHANNELS, 256, 256)
    singles = np.stack([landmark_image(p, 256) for p in pts])
    assert np.array_equal(batch.numpy(), singles)
    from_tensor = landmark_images(torch.from_numpy(pts), 128, src_size=256)
    assert torch.equal(from_tensor, landmark_images(pts, 128, src_size=256))
    assert from_tensor.shape == (3, COND_CHANNELS, 128, 128)


def test_real_portrait_landmarks(astronaut_source):
    pts = astronaut_source.landmarks.points
    img = landmark_image(pts, 256, src_size=astronaut_source.size)
    topo = topology()
    for eye in (topo.right_eye, topo.left_eye):
        cx, cy = np.rint(pts[eye, :2].mean(0) * 256 / astronaut_source.size).astype(int)
        assert img[EYES, cy - 1:cy + 2, cx - 1:cx + 2].min() > 0.5
    assert img[GAZE].max() > 0.5
