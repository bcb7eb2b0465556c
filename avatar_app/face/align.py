"""Crop geometry: similarity fits, aligned face crops, a jitter-free crop, paste-back.

Affine matrices are ``(2, 3) float64`` acting on column vectors ``[x, y, 1]`` in px.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .mesh import eye_centers, mouth_center


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ≈ s · R · src + t`` (Umeyama).

    Args:
        src, dst: ``(N, D)`` corresponding points, D = 2 or 3.

    Returns:
        ``(s, R, t)``: scale, ``(D, D)`` proper rotation, ``(D,)`` translation.
    """
    s, rot, t = similarity_fits(src, np.asarray(dst)[None])
    return float(s[0]), rot[0], t[0]


def similarity_fits(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`similarity_fit` of ``src (N, D)`` onto each of ``dst (M, N, D)`` at once:
    ``s (M,)``, ``R (M, D, D)``, ``t (M, D)``."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(1)
    xs, xd = src - mu_s, dst - mu_d[:, None]
    cov = np.swapaxes(xd, 1, 2) @ xs / len(src)  # (M, D, D)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones((len(dst), src.shape[1]))
    d[np.linalg.det(u) * np.linalg.det(vt) < 0, -1] = -1
    rot = u @ (d[:, :, None] * vt)
    var_s = (xs**2).sum() / len(src)
    scale = (sig * d).sum(1) / var_s if var_s > 0 else np.ones(len(dst))
    t = mu_d - scale[:, None] * (rot @ mu_s)
    return scale, rot, t


@dataclass(frozen=True)
class CropBox:
    """An oriented square in image px: centre, side length and rotation (radians)."""

    center: tuple[float, float]
    side: float
    angle: float

    def image_to_crop(self, size: int) -> np.ndarray:
        """Affine ``(2, 3)`` from image px to crop px for a ``size``×``size`` crop."""
        k = size / self.side
        c, s = np.cos(self.angle), np.sin(self.angle)
        rot = np.array([[c, s], [-s, c]]) * k  # rotate by -angle, then scale
        t = np.array([size / 2.0, size / 2.0]) - rot @ np.asarray(self.center)
        return np.hstack([rot, t[:, None]])

    def crop_to_image(self, size: int) -> np.ndarray:
        return cv2.invertAffineTransform(self.image_to_crop(size))


def face_crop_box(points: np.ndarray, scale: float = 1.0) -> CropBox:
    """The aligned square around a face (eyes level, face centred, room for hair).

    Proportions follow the widely used FFHQ alignment: half-side = max(2·eye
    distance, 1.8·eye-to-mouth distance), centred slightly below the eyes.

    Args:
        points: ``(478, 2|3)`` landmarks in image px.
        scale: multiplies the side (1.0 = FFHQ-like framing).
    """
    eye_r, eye_l = eye_centers(points[:, :2])
    mouth = mouth_center(points[:, :2])
    eye_avg = (eye_r + eye_l) / 2
    e2e = eye_l - eye_r
    e2m = mouth - eye_avg
    x_dir = e2e - np.array([-e2m[1], e2m[0]])
    half = max(np.linalg.norm(e2e) * 2.0, np.linalg.norm(e2m) * 1.8)
    center = eye_avg + e2m * 0.1
    return CropBox((float(center[0]), float(center[1])), float(2 * half * scale), float(np.arctan2(x_dir[1], x_dir[0])))


class CropStabilizer:
    """Keeps a face crop still while the face is still, follows it when it moves.

    A new box is accepted only when it differs from the held one by more than a
    dead band (relative to the side); then the held box moves part of the way
    towards it.  Identical or near-identical inputs therefore give a bit-identical
    crop, so a still face never jitters.
    """

    def __init__(self, deadband: float = 0.02, angle_deadband: float = 0.02, follow: float = 0.6):
        self.deadband = deadband
        self.angle_deadband = angle_deadband
        self.follow = follow
        self.box: CropBox | None = None

    def reset(self) -> None:
        self.box = None

    def update(self, box: CropBox) -> CropBox:
        held = self.box
        if held is None:
            self.box = box
            return box
        dc = np.hypot(box.center[0] - held.center[0], box.center[1] - held.center[1]) / held.side
        ds = abs(box.side - held.side) / held.side
        da = abs(np.angle(np.exp(1j * (box.angle - held.angle))))
        if dc < self.deadband and ds < self.deadband and da < self.angle_deadband:
            return held
        a = self.follow
        da_signed = float(np.angle(np.exp(1j * (box.angle - held.angle))))
        self.box = CropBox(
            (held.center[0] + a * (box.center[0] - held.center[0]), held.center[1] + a * (box.center[1] - held.center[1])),
            held.side + a * (box.side - held.side),
            held.angle + a * da_signed,
        )
        return self.box


def affine_after(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The affine ``a`` applied after ``b`` (both ``(2, 3)``): a point x goes to ``a(b(x))``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.hstack([a[:, :2] @ b[:, :2], (a[:, :2] @ b[:, 2] + a[:, 2])[:, None]])


AREA_BELOW = 2 / 3  # crop scales (crop px per image px) under which an antialiased crop averages the pixels first


def warp_to_crop(image: np.ndarray, affine: np.ndarray, size: int, antialias: bool = False) -> np.ndarray:
    """Crop ``(size, size, 3)`` from ``image`` with an image->crop affine (edges replicated).

    ``antialias``: where the crop shrinks the image more than 1.5x (a phone photo, a 1080p webcam), the pixels it
    covers are averaged down to about the crop's scale first, as bilinear sampling alone reads 4 of every
    (1 / scale)^2 of them and the photo's fine texture and noise alias.  The dataset's crops (``prepare``)
    are made without it, as the shipped networks were trained on them."""
    if antialias:
        image, affine = _averaged_down(image, np.asarray(affine, np.float64), size)
    return cv2.warpAffine(image, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _averaged_down(image: np.ndarray, affine: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``image`` the crop covers, averaged over blocks of k x k pixels (k the whole number nearest the
    shrink factor, so the crop then samples it at 0.8-1.33x), and the affine from it; as given where the crop
    shrinks the image by less than 1 / :data:`AREA_BELOW` or covers none of it."""
    scale = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))
    if scale >= AREA_BELOW:
        return image, affine
    k = max(2, round(1 / scale))
    inv = cv2.invertAffineTransform(affine)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) @ inv[:, :2].T + inv[:, 2]
    margin = 3 * k  # so that sampling at the crop's edge reads averaged pixels, not the border
    h, w = image.shape[:2]
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - margin, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + margin, (w, h))
    if x1 - x0 < k or y1 - y0 < k:
        return image, affine
    part = image[y0:y1, x0:x1]
    pad_y, pad_x = -(y1 - y0) % k, -(x1 - x0) % k  # whole blocks: the image's last row and column repeated
    if pad_x or pad_y:
        part = cv2.copyMakeBorder(part, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE)
    small = cv2.resize(part, (part.shape[1] // k, part.shape[0] // k), interpolation=cv2.INTER_AREA)
    # pixel (u, v) of ``small`` is the mean of image px x0 + k u ... x0 + k u + k - 1 (and so in y)
    to_image = np.array([[k, 0, x0 + (k - 1) / 2], [0, k, y0 + (k - 1) / 2]], np.float64)
    return small, affine_after(affine, to_image)


def transform_points(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Apply a similarity affine to ``(N, 2|3)`` points; z is scaled like x/y."""
    out = np.array(points, dtype=np.float64, copy=True)
    out[:, :2] = points[:, :2] @ affine[:, :2].T + affine[:, 2]
    if points.shape[1] == 3:
        out[:, 2] = points[:, 2] * np.sqrt(abs(np.linalg.det(affine[:, :2])))
    return out.astype(np.float32)


def rescale_points(points: np.ndarray, from_size: int, to_size: int) -> np.ndarray:
    """Landmarks ``(..., 3)`` in px of a ``from_size`` crop → px of the same crop at ``to_size``.

    Pixel centres are kept (``x' = (x + 0.5) · k − 0.5``); depth scales by ``k``.
    Returns a new ``float32`` array.
    """
    pts = np.array(points, dtype=np.float32, copy=True)
    if from_size == to_size:
        return pts
    k = to_size / from_size
    pts[..., :2] = (pts[..., :2] + 0.5) * k - 0.5
    pts[..., 2] *= k
    return pts


def feather_mask(size: int, feather: float = 0.12) -> np.ndarray:
    """``(size, size) float32`` 1 in the middle, ramping smoothly to 0 at the border."""
    ramp = max(1.0, feather * size)
    d = np.minimum(np.arange(size) + 0.5, size - np.arange(size) - 0.5)
    edge = np.clip(d / ramp, 0.0, 1.0)
    edge = edge * edge * (3 - 2 * edge)
    return np.outer(edge, edge).astype(np.float32)


def paste_back(crop: np.ndarray, image: np.ndarray, crop_to_image: np.ndarray, feather: float = 0.12) -> np.ndarray:
    """Blend an (animated) aligned crop back into the full image with a soft mask.

    Args:
        crop: ``(S, S, 3) uint8``.
        image: ``(H, W, 3) uint8`` the original full image.
        crop_to_image: ``(2, 3)`` affine crop px -> image px.
        feather: width of the soft border as a fraction of the crop side.

    Returns:
        ``(H, W, 3) uint8`` new image.
    """
    h, w = image.shape[:2]
    size = crop.shape[0]
    warped = cv2.warpAffine(crop, crop_to_image, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mask = cv2.warpAffine(feather_mask(size, feather), crop_to_image, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    m = mask[..., None]
    out = warped.astype(np.float32) * m + image.astype(np.float32) * (1 - m)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
