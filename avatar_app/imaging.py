"""Small image helpers shared by sources, portraits and sinks."""

from __future__ import annotations

import cv2
import numpy as np


def as_bgr(image: np.ndarray) -> np.ndarray:
    """An 8-bit grey ``(H, W)`` / ``(H, W, 1)``, BGR or BGRA array as ``(H, W, 3) uint8`` BGR.

    Raises:
        ValueError: for other dtypes or shapes.
    """
    if image.dtype != np.uint8:
        raise ValueError(f"images must be 8-bit (uint8), not {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"unsupported image shape {image.shape}; expected grey, BGR or BGRA")


def bgr_to_rgb_chw(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8`` BGR -> ``(3, H, W) float32`` RGB in [0, 1] (the networks' layout)."""
    return np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / np.float32(255)


def rgb_chw_to_bgr(image: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` float RGB in [0, 1] -> ``(H, W, 3) uint8`` BGR (rounded, clipped)."""
    out = np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0 + 0.5
    return np.ascontiguousarray(out.astype(np.uint8)[::-1].transpose(1, 2, 0))
