"""Evaluation metrics: exact values on constructed inputs, SSIM against scikit-image."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from avatar_app.capture.synthetic import synthetic_landmarks
from avatar_app.face.mesh import eye_centers
from avatar_app.train.metrics import (
    PSNR_CAP_DB,
    inter_ocular_distance,
    l1,
    landmark_follow_error,
    psnr,
    ssim,
    temporal_jitter,
)


def test_identical_images(astronaut):
    assert psnr(astronaut, astronaut) == PSNR_CAP_DB == 100.0
    assert ssim(astronaut, astronaut) == pytest.approx(1.0, abs=1e-12)
    assert l1(astronaut, astronaut) == 0.0


def test_psnr_formula():
    a = np.full((32, 48, 3), 100, np.uint8)
    assert psnr(a, a + 5) == pytest.approx(10 * math.log10(255**2 / 25.0), abs=1e-9)  # 34.15 dB
    rng = np.random.default_rng(0)
    b = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    c = np.clip(b.astype(int) + rng.integers(-20, 21, size=b.shape), 0, 255).astype(np.uint8)
    mse = np.mean((b.astype(float) - c.astype(float)) ** 2)
    assert psnr(b, c) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)
    assert psnr(b, c) == psnr(c, b)


def test_l1_units():
    a = np.zeros((8, 8, 3), np.uint8)
    assert l1(a, a + 51) == pytest.approx(0.2)
    assert l1(a, np.full_like(a, 255)) == pytest.approx(1.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))


def test_ssim_matches_skimage(astronaut):
    skm = pytest.importorskip("skimage.metrics")
    blurred = cv2.GaussianBlur(astronaut, (0, 0), 2.0)
    rng = np.random.default_rng(1)
    noisy = np.clip(astronaut.astype(int) + rng.normal(0, 12, astronaut.shape).round(), 0, 255).astype(np.uint8)
    grey = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    for other in (blurred, noisy):
        ref = skm.structural_similarity(grey, cv2.cvtColor(other, cv2.COLOR_BGR2GRAY), gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False, data_range=255)
        ours = ssim(astronaut, other)
        assert abs(ours - ref) < 0.01
        assert ours < 0.95
    assert ssim(astronaut, blurred) > ssim(astronaut, cv2.GaussianBlur(astronaut, (0, 0), 4.0))


def test_landmark_error_of_a_shifted_copy():
    pts = synthetic_landmarks().points
    right, left = eye_centers(pts[:, :2])
    iod = float(np.linalg.norm(right - left))
    assert inter_ocular_distance(pts) == pytest.approx(iod)
    shifted = pts + np.array([3.0, 4.0, 7.0], np.float32)  # 5 px in the image plane; z is ignored
    assert landmark_follow_error(shifted, pts) == pytest.approx(5.0 / iod * 100.0, rel=1e-5)
    assert landmark_follow_error(pts, pts) == 0.0
    assert landmark_follow_error(synthetic_landmarks(), synthetic_landmarks()) == 0.0  # Landmarks accepted


def test_temporal_jitter():
    base = np.full((16, 16, 3), 120, np.uint8)
    assert temporal_jitter([base] * 5) == 0.0
    ramp = [np.full((16, 16), 10 * i, np.uint8) for i in range(6)]
    assert temporal_jitter(ramp) == pytest.approx(0.0)  # uniform change has no second difference
    alternating = [np.full((16, 16), 10 * (i % 2), np.uint8) for i in range(6)]
    assert temporal_jitter(alternating) == pytest.approx(20.0)  # |0 - 2*10 + 0|
    assert temporal_jitter(alternating, alternating) == 0.0
    assert temporal_jitter([base] * 6, alternating) == pytest.approx(-20.0)  # smoother than the reference
    assert math.isnan(temporal_jitter([base, base]))
