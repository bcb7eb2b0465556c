"""A procedural driver: a face's landmarks animated with no camera and no video.

The neutral frontal face from the mesh data is posed in 3-D (yaw, pitch, roll about
a pivot inside the head) and deformed by a few hand-written expression controls
(jaw, smile, pucker, blinks, gaze, brows).  :func:`synthetic_landmarks` poses it once;
:class:`SyntheticDriver` plays a seeded timeline of nods, turns, blinks, speech-like
mouth motion and smiles, and renders the mesh as its preview image.  Its frames carry
their landmarks, so the tracker passes them through.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from ..face.mesh import topology
from ..types import Frame, Landmarks
from .base import FrameSource

MOUTH_CORNERS = (61, 291, 78, 308)  # subject's right outer, left outer, right inner, left inner


@dataclass(frozen=True)
class FacePose:
    """Controls of the synthetic face.

    Angles in degrees: ``yaw`` > 0 turns the face towards the image's right,
    ``pitch`` > 0 nods down, ``roll`` > 0 tilts clockwise on screen.  Expression
    controls are 0..1.  ``gaze`` is (right, down) in iris widths; ``shift`` moves the
    head in face widths; ``scale`` > 1 brings it closer.
    """

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    jaw: float = 0.0
    smile: float = 0.0
    pucker: float = 0.0
    blink_left: float = 0.0
    blink_right: float = 0.0
    brows: float = 0.0
    gaze: tuple[float, float] = (0.0, 0.0)
    shift: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0


@lru_cache(maxsize=1)
def _weights() -> dict[str, np.ndarray]:
    """Per-vertex weights of each expression control, on the neutral face."""
    topo = topology()
    n = topo.neutral.astype(np.float64)
    x, y = n[:, 0], n[:, 1]
    mouth_y = n[list(topo.lips_inner_upper)][:, 1].mean()
    # the jaw: everything below the lip line moves, fading sideways past the mouth corners
    below = np.clip((y - mouth_y) / 0.06, 0, 1)
    lateral = np.exp(-np.maximum(0.0, np.abs(x) - 0.3) ** 2 / (2 * 0.35**2))
    jaw = below * lateral
    outer = list(topo.lips_outer)
    jaw[list(MOUTH_CORNERS)] = 0.45
    jaw[topo.lips_inner_lower[1:-1]] = 1.0
    upper = np.zeros(len(n))
    upper[topo.lips_inner_upper[1:-1]] = 1.0
    upper[[i for i in outer if n[i, 1] < mouth_y - 0.02]] = 0.6
    corners = np.zeros((len(n), 2))
    for idx, side in zip(MOUTH_CORNERS, (-1, 1, -1, 1)):
        g = np.exp(-np.sum((n[:, :2] - n[idx, :2]) ** 2, axis=1) / (2 * 0.2**2))
        corners[:, 0 if side < 0 else 1] = np.maximum(corners[:, 0 if side < 0 else 1], g)
    brow_pts = np.concatenate([topo.right_brow, topo.left_brow])
    brow = np.zeros(len(n))
    for i in brow_pts:
        brow = np.maximum(brow, np.exp(-np.sum((n[:, :2] - n[i, :2]) ** 2, axis=1) / (2 * 0.12**2)))
    return {"jaw": jaw, "upper": upper, "corner_r": corners[:, 0], "corner_l": corners[:, 1], "brow": brow}


def _blink(pts: np.ndarray, upper: np.ndarray, lower: np.ndarray, iris: np.ndarray, amount: float) -> None:
    """Close one eye in place: upper lid down to (nearly) the lower lid."""
    if amount <= 0:
        return
    u, lo = upper[1:-1], lower[1:-1]
    gap = pts[lo, 1] - pts[u, 1]
    pts[u, 1] += 0.85 * amount * gap
    pts[lo, 1] -= 0.15 * amount * gap
    center = pts[iris[0]].copy()
    pts[iris[1:], 1] = center[1] + (pts[iris[1:], 1] - center[1]) * (1 - amount)
    # the skin just above the lid follows a little
    eye_c = pts[np.concatenate([upper, lower])].mean(0)
    d = np.linalg.norm(pts[:, :2] - eye_c[:2], axis=1)
    above = (pts[:, 1] < eye_c[1]) & (d < 0.5)
    above[u] = False
    pts[above, 1] += amount * 0.25 * gap.max() * np.exp(-((d[above] / 0.3) ** 2))


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    a, b, c = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def synthetic_landmarks(
    pose: FacePose = FacePose(), image_size: tuple[int, int] = (640, 480), eye_distance_px: float = 64.0
) -> Landmarks:
    """Landmarks of the synthetic face in ``pose``, in px of an ``image_size`` frame."""
    topo = topology()
    w = _weights()
    p = topo.neutral.astype(np.float64).copy()
    p[:, 1] += pose.jaw * 0.42 * w["jaw"] - pose.jaw * 0.05 * w["upper"]
    p[:, 2] += pose.jaw * 0.08 * w["jaw"]
    for key, side in (("corner_r", -1.0), ("corner_l", 1.0)):
        g = w[key]
        p[:, 0] += side * g * (0.10 * pose.smile - 0.12 * pose.pucker)
        p[:, 1] -= g * 0.07 * pose.smile
        p[:, 2] -= g * 0.06 * pose.pucker
    p[:, 1] -= w["brow"] * 0.12 * pose.brows
    gx, gy = pose.gaze
    for iris in (topo.right_iris, topo.left_iris):
        width = np.linalg.norm(p[iris[1]] - p[iris[3]])
        p[iris, 0] += gx * width
        p[iris, 1] += gy * width
    _blink(p, topo.right_eye_upper, topo.right_eye_lower, topo.right_iris, pose.blink_right)
    _blink(p, topo.left_eye_upper, topo.left_eye_lower, topo.left_iris, pose.blink_left)

    pivot = np.array([0.0, 0.6, 1.3])
    p = (p - pivot) @ _rotation(pose.yaw, pose.pitch, pose.roll).T + pivot
    k = eye_distance_px * pose.scale
    cx = image_size[0] / 2 + pose.shift[0] * 2.2 * eye_distance_px
    cy = image_size[1] * 0.42 + pose.shift[1] * 2.2 * eye_distance_px
    out = p * k + np.array([cx, cy, 0.0])
    return Landmarks(out.astype(np.float32), image_size, 1.0)


def _pulse(t: float, center: float, width: float) -> float:
    """Smooth bump 0..1..0 of total ``width`` seconds centred at ``center``."""
    u = (t - center) / (width / 2)
    return float(np.cos(np.pi * u / 2) ** 2) if abs(u) < 1 else 0.0


def _ramp(t: float, t0: float, t1: float) -> float:
    u = np.clip((t - t0) / (t1 - t0), 0.0, 1.0)
    return float(u * u * (3 - 2 * u))


def timeline_pose(t: float, seed: int = 0) -> FacePose:
    """The scripted pose at ``t`` seconds: still for 1 s (a neutral to calibrate on),
    then a 12-second loop of nods, turns, talking, a smile and blinks."""
    if t < 1.0:
        return FacePose()
    rng = np.random.default_rng(seed)
    blink_times = np.cumsum(rng.uniform(2.0, 4.0, size=64)) + 0.5
    syllables = rng.uniform(0.35, 1.0, size=256)
    u = (t - 1.0) % 12.0
    on = _ramp(t, 1.0, 2.0)
    yaw = 22.0 * np.sin(2 * np.pi * u / 6.0) * _ramp(u, 0.0, 1.0) * on
    pitch = 12.0 * np.sin(2 * np.pi * u / 2.0) * (_pulse(u, 2.0, 4.0) + _pulse(u, 8.5, 3.0)) * on
    roll = 6.0 * np.sin(2 * np.pi * u / 7.0) * on
    talking = (_ramp(u, 3.0, 3.3) - _ramp(u, 6.2, 6.5)) + (_ramp(u, 8.0, 8.3) - _ramp(u, 11.0, 11.3))
    syl = int(t * 4.5)
    phase = t * 4.5 - syl
    jaw = talking * syllables[syl % len(syllables)] * np.sin(np.pi * phase) ** 2 * 0.8
    pucker = talking * 0.4 * max(0.0, np.sin(2 * np.pi * t * 1.3)) ** 2
    smile = _pulse(u, 7.0, 2.4)
    blink = max((_pulse(t, bt, 0.22) for bt in blink_times if abs(t - bt) < 0.2), default=0.0)
    gaze = (0.25 * np.sin(2 * np.pi * t / 5.0) * on, 0.0)
    brows = 0.6 * _pulse(u, 4.5, 1.2)
    return FacePose(yaw, pitch, roll, jaw, smile, pucker, blink, blink, brows, gaze)


def draw_mesh(landmarks: Landmarks, image: np.ndarray | None = None, color=(120, 220, 120)) -> np.ndarray:
    """Draw the mesh wireframe (``image`` or a dark canvas of the landmarks' size)."""
    w, h = landmarks.image_size
    canvas = np.full((h, w, 3), 24, np.uint8) if image is None else image
    edges = topology().edges
    lines = np.round(landmarks.xy[edges]).astype(np.int32)
    cv2.polylines(canvas, list(lines), False, color, 1, cv2.LINE_AA)
    return canvas


class SyntheticDriver(FrameSource):
    """A :class:`FrameSource` playing :func:`timeline_pose`.

    Args:
        fps: frames per second of the timeline.
        duration: seconds to play, ``None`` for endless.
        size: ``(w, h)`` of the preview frames and the landmark space.
        seed: varies blink times and syllables.
        realtime: pace frames at ``fps`` on the wall clock (for live use).
        render: draw the mesh into each frame's image (else a blank frame).
    """

    def __init__(self, fps: float = 25.0, duration: float | None = 10.0, size=(640, 480), seed: int = 0,
                 realtime: bool = False, render: bool = True):
        self._fps = float(fps)
        self.duration = duration
        self.size = (int(size[0]), int(size[1]))
        self.seed = seed
        self.realtime = realtime
        self.render = render
        self._closed = False

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.size

    @property
    def frame_count(self) -> int | None:
        return None if self.duration is None else int(round(self.duration * self._fps))

    def open(self) -> None:
        self._closed = False

    def close(self) -> None:
        self._closed = True

    def frame_at(self, index: int) -> Frame:
        t = index / self._fps
        lm = synthetic_landmarks(timeline_pose(t, self.seed), self.size)
        image = draw_mesh(lm) if self.render else np.zeros((self.size[1], self.size[0], 3), np.uint8)
        return Frame(image=image, timestamp=t, index=index, landmarks=lm)

    def __iter__(self):
        n = self.frame_count
        start = time.monotonic()
        i = 0
        while not self._closed and (n is None or i < n):
            if self.realtime:
                delay = start + i / self._fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield self.frame_at(i)
            i += 1
