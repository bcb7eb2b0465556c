"""The nouns every stage shares.

Coordinate conventions (used everywhere in the project):

* Images are ``uint8`` BGR arrays of shape ``(H, W, 3)`` (OpenCV order).
* Landmark points are ``float32`` arrays of shape ``(N, 3)`` in **pixels** of the
  image they were measured on: ``x`` to the right, ``y`` down, ``z`` depth in the
  same pixel scale as ``x`` (smaller = closer to the camera, mediapipe's
  convention).  ``N`` is 478 (468 mesh points + 10 iris points).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

NUM_LANDMARKS = 478


@dataclass(frozen=True)
class Landmarks:
    """Face landmarks on one image.

    Attributes:
        points: ``(478, 3) float32``, image px (see module docstring).
        image_size: ``(width, height)`` of the image the points refer to.
        confidence: 0..1, how much the tracker trusts this detection.
    """

    points: np.ndarray
    image_size: tuple[int, int]
    confidence: float = 1.0

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=np.float32)
        if pts.shape != (NUM_LANDMARKS, 3):
            raise ValueError(f"landmark points must be ({NUM_LANDMARKS}, 3), got {pts.shape}")
        object.__setattr__(self, "points", pts)

    @property
    def xy(self) -> np.ndarray:
        """``(478, 2) float32`` image px."""
        return self.points[:, :2]

    def with_points(self, points: np.ndarray) -> "Landmarks":
        return replace(self, points=np.asarray(points, dtype=np.float32))


@dataclass
class Frame:
    """One frame from a :class:`~avatar_app.capture.base.FrameSource`.

    Attributes:
        image: ``(H, W, 3) uint8`` BGR.
        timestamp: seconds, monotonic clock of the source (video: presentation time).
        index: running frame number from the source, starting at 0.
        landmarks: set by sources that already know the face (the synthetic driver);
            the tracker then passes them through instead of running detection.
    """

    image: np.ndarray
    timestamp: float
    index: int
    landmarks: Landmarks | None = None


@dataclass(frozen=True)
class TrackResult:
    """What the tracker says about one frame.

    ``landmarks`` is ``None`` when no face was found (``found`` is False then).  ``cut`` is True
    when the face's raw landmarks jumped from the last frame's (a shot cut, another person: the
    tracker restarted its smoothing there); the driver guard treats that frame as a jump.
    """

    landmarks: Landmarks | None
    confidence: float
    timestamp: float = 0.0
    cut: bool = False

    @property
    def found(self) -> bool:
        return self.landmarks is not None


@dataclass
class SourcePortrait:
    """A source portrait prepared once: aligned crop, its landmarks, and geometry.

    Attributes:
        crop: ``(S, S, 3) uint8`` BGR aligned crop, ``S`` = ``size``.
        landmarks: landmarks in crop px.
        size: crop side in px (256 or 512).
        image: the full original image (BGR), for paste-back.
        crop_to_image: ``(2, 3) float64`` affine mapping crop px -> original image px.
        face_index: which face of the image was used (0 = largest).
        path: where the image came from, if a file.
    """

    crop: np.ndarray
    landmarks: Landmarks
    size: int
    image: np.ndarray
    crop_to_image: np.ndarray
    face_index: int = 0
    path: str | None = None
    extras: dict = field(default_factory=dict)
