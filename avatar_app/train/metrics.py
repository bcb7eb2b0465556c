"""Image, landmark and temporal metrics for evaluating animators.

Pure functions on ``uint8`` BGR images (any equal shapes work: grey ``(H, W)`` too)
and landmark arrays; nothing here loads models or touches files.

* :func:`psnr`, :func:`ssim`, :func:`l1` — how close an output frame is to the
  ground truth, in the usual units (dB, 0..1 similarity, 0..1 mean absolute error).
* :func:`landmark_follow_error` — how well an output follows the driving landmarks,
  in % of the target's inter-ocular distance (scale-free across crop sizes).
* :func:`temporal_jitter` — frame-to-frame shimmer of a sequence, optionally as the
  excess over a reference sequence's own (real motion has some second difference too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from ..face.mesh import eye_centers

PSNR_CAP_DB = 100.0  # what identical images score (their MSE is 0)

_SSIM_WINDOW = (11, 11)
_SSIM_SIGMA = 1.5
_SSIM_K1, _SSIM_K2 = 0.01, 0.03
_PEAK = 255.0


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("images are empty")
    return a, b


def _grey(image: np.ndarray) -> np.ndarray:
    """``float64`` grey levels 0..255 of a BGR, BGRA or grey ``uint8`` image."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img, dtype=np.uint8), cv2.COLOR_BGR2GRAY)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(np.ascontiguousarray(img, dtype=np.uint8), cv2.COLOR_BGRA2GRAY)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    elif img.ndim != 2:
        raise ValueError(f"expected an image (H, W) or (H, W, 3), got shape {img.shape}")
    return img.astype(np.float64)


def _region_mean(values: np.ndarray, mask: np.ndarray | None) -> float:
    """Mean of ``values (H, W[, C])`` over the pixels where ``mask (H, W)`` is non-zero (all when None)."""
    if mask is None:
        return float(np.mean(values))
    m = np.asarray(mask).astype(bool)
    if m.shape != values.shape[:2]:
        raise ValueError(f"mask {m.shape} does not match the image {values.shape[:2]}")
    if not m.any():
        raise ValueError("the mask selects no pixel")
    return float(np.mean(values[m]))


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB for 8-bit images (peak 255), over all channels
    (and only the pixels where ``mask (H, W)`` is non-zero, if given).

    ``10 · log10(255² / MSE)``; identical images (MSE 0) and anything above score
    :data:`PSNR_CAP_DB` (100 dB), so the value is always finite.
    """
    a, b = _pair(a, b)
    mse = _region_mean((a.astype(np.float64) - b.astype(np.float64)) ** 2, mask)
    if mse <= 0.0:
        return PSNR_CAP_DB
    return float(min(PSNR_CAP_DB, 10.0 * math.log10(_PEAK * _PEAK / mse)))


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Structural similarity (Wang et al. 2004) of the grey levels, -1..1 (1 = identical).

    Colour images are converted to grey (OpenCV's BT.601 weights) first. Local
    statistics use an 11×11 Gaussian window with σ = 1.5 (``cv2.GaussianBlur``),
    population (not sample) covariances, ``C1 = (0.01·255)²`` and ``C2 = (0.03·255)²``.
    The SSIM map is averaged without its 5-px border, where the window would reach
    outside the image — the same convention as
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255)``. With ``mask (H, W)`` the map is
    averaged over the masked pixels only.
    """
    a, b = _pair(a, b)
    x, y = _grey(a), _grey(b)
    c1, c2 = (_SSIM_K1 * _PEAK) ** 2, (_SSIM_K2 * _PEAK) ** 2

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, _SSIM_WINDOW, _SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * cxy + c2)
    den = (mx * mx + my * my + c1) * (vx + vy + c2)
    smap = num / den
    pad = _SSIM_WINDOW[0] // 2
    if smap.shape[0] > 2 * pad and smap.shape[1] > 2 * pad:
        smap = smap[pad:-pad, pad:-pad]
        mask = None if mask is None else np.asarray(mask)[pad:-pad, pad:-pad]
    return _region_mean(smap, mask)


def l1(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute difference over all pixels (where ``mask`` is non-zero) and channels, in
    [0, 1] (255 grey levels = 1)."""
    a, b = _pair(a, b)
    return _region_mean(np.abs(a.astype(np.float64) - b.astype(np.float64)), mask) / _PEAK


def _points(p) -> np.ndarray:
    pts = np.asarray(getattr(p, "points", p), dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] < 2:
        raise ValueError(f"expected landmark points (N, 2) or (N, 3), got shape {pts.shape}")
    return pts


def inter_ocular_distance(points) -> float:
    """Distance between the two eye-contour centres (image plane, px)."""
    right, left = eye_centers(_points(points)[:, :2])
    return float(np.linalg.norm(right - left))


def landmark_follow_error(output_points, target_points) -> float:
    """Mean point-to-point distance between two sets of the 478 landmarks, in % of the
    target's inter-ocular distance.

    Only ``x, y`` count: ``z`` of a re-detected face is mediapipe's relative depth,
    not a measurement that should match the target's. The inter-ocular distance is
    between the target's eye-contour centres (:func:`avatar_app.face.mesh.eye_centers`),
    so a 1-px error on a face with 64 px between the eyes is 1.56 %.

    Args:
        output_points: ``(478, 2|3)`` array or :class:`~avatar_app.types.Landmarks`,
            e.g. landmarks re-detected on an animator's output.
        target_points: same layout, same image px: the landmarks it was driven with.
    """
    out, tgt = _points(output_points), _points(target_points)
    if out.shape[0] != tgt.shape[0]:
        raise ValueError(f"landmark counts differ: {out.shape[0]} vs {tgt.shape[0]}")
    iod = inter_ocular_distance(tgt)
    if not np.isfinite(iod) or iod <= 1e-6:
        raise ValueError("the target's eyes coincide, so the inter-ocular distance is zero")
    dist = np.linalg.norm(out[:, :2] - tgt[:, :2], axis=1)
    return float(dist.mean() / iod * 100.0)


def _second_difference(frames: Sequence[np.ndarray]) -> float:
    if len(frames) < 3:
        return float("nan")
    grey = [_grey(f) for f in frames]
    shape = grey[0].shape
    if any(g.shape != shape for g in grey):
        raise ValueError("all frames of a sequence must have the same size")
    total = 0.0
    for prev, cur, nxt in zip(grey, grey[1:], grey[2:]):
        total += float(np.mean(np.abs(nxt - 2.0 * cur + prev)))
    return total / (len(grey) - 2)


def temporal_jitter(frames: Sequence[np.ndarray], reference: Sequence[np.ndarray] | None = None) -> float:
    """Temporal jitter: mean ``|f[t+1] − 2·f[t] + f[t−1]|`` over pixels and frames, in grey levels.

    The second temporal difference is zero for a still or uniformly changing sequence
    and large for flicker (a frame that jumps away and back). Frames are compared in
    grey levels (0..255, colour converted to grey); a sequence needs at least 3 frames,
    otherwise the result is ``nan``.

    Real motion accelerates too, so an absolute value mixes shimmer with content.
    With a ``reference`` (the ground-truth frames for the same time steps) the result is
    the **excess** ``jitter(frames) − jitter(reference)``: about 0 when the output is as
    smooth as reality, positive when it shimmers more, and negative when it is smoother
    (e.g. a frozen output). ``nan`` if either sequence is shorter than 3 frames.
    """
    own = _second_difference(list(frames))
    if reference is None:
        return own
    return own - _second_difference(list(reference))
