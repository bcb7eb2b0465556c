"""Stress drivers: frame sequences that break naive retargeting.

Each builder returns a :class:`StressDriver` — a named list of frames and the frame
rate — made from real clips (shot cuts between people, approach and retreat, fast
side-to-side motion, a second face entering) or from the synthetic face (profile
turns, a cut to a different place and size).  They are plain data: the same driver
plays through the offline render, the live pipeline and the checks in
:mod:`avatar_app.train.stress_checks`.

Real frames are read with OpenCV and resized to ``size`` px squares; the clips are
never copied anywhere.  Image-space stresses (zoom, shift, a pasted second face) pad
with a flat grey so no mirrored copy of the face appears at the border.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from ..people import row_person
from ..types import Frame, Landmarks
from .base import FrameSource
from .synthetic import FacePose, draw_mesh, synthetic_landmarks, timeline_pose

PAD_GREY = 118  # border fill of zoomed/shifted frames (BGR grey)


@dataclass
class StressDriver:
    """A named driving sequence.

    Attributes:
        name: what it stresses (``shot_cut``, ``approach_retreat``...).
        frames: the frames, timestamps ``index / fps`` s.
        fps: frame rate.
        natural: image lists of the driver's own continuous motion, for the jump bound:
            each clip of a shot cut, the user's clip under a second face, the moved
            frames of a zoom or a shift (that motion is the driver's); empty for synthetic
            drivers, whose natural motion is ``natural_landmarks``.
        natural_landmarks: for synthetic drivers, their landmarks cut into the
            stretches of continuous motion (between cuts).
    """

    name: str
    frames: list[Frame]
    fps: float
    natural: list[list[np.ndarray]] = field(default_factory=list)
    natural_landmarks: list[list[Landmarks]] = field(default_factory=list)

    def source(self) -> FrameListSource:
        return FrameListSource(self.frames, self.fps)


class FrameListSource(FrameSource):
    """Play a list of :class:`Frame` once (frames carrying landmarks skip detection)."""

    def __init__(self, frames: Sequence[Frame], fps: float):
        self._frames = list(frames)
        self._fps = float(fps)

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def frame_size(self) -> tuple[int, int] | None:
        return (self._frames[0].image.shape[1], self._frames[0].image.shape[0]) if self._frames else None

    @property
    def frame_count(self) -> int:
        return len(self._frames)

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator[Frame]:
        return iter(self._frames)


def read_clip(path: str | Path, count: int, size: int = 384, start: int = 0) -> list[np.ndarray]:
    """Up to ``count`` frames of a video from frame ``start``, resized to ``(size, size)`` BGR."""
    cap = cv2.VideoCapture(str(path))
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        out = []
        while len(out) < count:
            ok, image = cap.read()
            if not ok:
                break
            out.append(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
        return out
    finally:
        cap.release()


def manifest_rows(folder: str | Path) -> list[dict[str, str]]:
    """The rows of ``folder``'s ``MANIFEST.tsv`` (one per clip, in its order)."""
    with open(Path(folder) / "MANIFEST.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def person_of_row(row: dict[str, str]) -> str:
    """The person a manifest row names (:func:`avatar_app.people.row_person`; the file name when it names none)."""
    return row_person(row) or row["file"]


def clips_of_different_people(folder: str | Path, count: int, min_frames: int = 90,
                              exclude: Collection[str] = ()) -> list[Path]:
    """``count`` clips of different people from ``folder``'s ``MANIFEST.tsv`` (a face in every
    frame, at least ``min_frames`` long; each person's first such clip; none of the people in
    ``exclude``), spread over the manifest in its order."""
    folder = Path(folder)
    seen: set[str] = set(exclude)
    good = []
    for row in manifest_rows(folder):
        person = person_of_row(row)
        if person in seen or float(row["face_fraction"]) < 1.0 or int(row["frames_kept"]) < min_frames:
            continue
        if not (folder / row["file"]).is_file():
            continue
        seen.add(person)
        good.append(folder / row["file"])
    if len(good) < count:
        return good
    step = len(good) / count
    return [good[int(i * step)] for i in range(count)]


def _frames(images: Sequence[np.ndarray], fps: float) -> list[Frame]:
    return [Frame(image=im, timestamp=i / fps, index=i) for i, im in enumerate(images)]


def _affine(image: np.ndarray, scale: float, dx: float, dy: float) -> np.ndarray:
    """Zoom ``image`` about its centre by ``scale`` and shift by ``(dx, dy)`` px, grey border."""
    h, w = image.shape[:2]
    m = np.array([[scale, 0, (1 - scale) * w / 2 + dx], [0, scale, (1 - scale) * h / 2 + dy]], np.float32)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(PAD_GREY,) * 3)


def shot_cut(clips: Sequence[Sequence[np.ndarray]], fps: float, shot: int = 30) -> StressDriver:
    """Cut between clips of different people every ``shot`` frames (A, B, C, ..., A, B ...)."""
    images, cursors = [], [0] * len(clips)
    total = sum(len(c) for c in clips)
    k = 0
    while len(images) < total:
        c = k % len(clips)
        part = clips[c][cursors[c]:cursors[c] + shot]
        if not part:
            break
        images.extend(part)
        cursors[c] += shot
        k += 1
    return StressDriver("shot_cut", _frames(images, fps), fps, [list(c) for c in clips])


def _modulated(name: str, images: Sequence[np.ndarray], fps: float,
               transform: Callable[[np.ndarray, float], np.ndarray]) -> StressDriver:
    """Frames moved by ``transform``; the moved frames are the driver's own (continuous) motion."""
    out = [transform(im, i / fps) for i, im in enumerate(images)]
    return StressDriver(name, _frames(out, fps), fps, [out])


def approach_retreat(images: Sequence[np.ndarray], fps: float, period_s: float = 4.0,
                     low: float = 0.5, high: float = 2.0, retreat_first: bool = False) -> StressDriver:
    """The face comes closer (to ``high`` × its size) and backs away (to ``low`` ×), smoothly
    (``retreat_first``: backs away first)."""
    lo, hi = math.log(low), math.log(high)
    sign = -1.0 if retreat_first else 1.0

    def zoom(im: np.ndarray, t: float) -> np.ndarray:
        u = sign * math.sin(2 * math.pi * t / period_s)  # 0 -> +1 -> 0 -> -1 -> 0 (or -1 first)
        return _affine(im, math.exp(u * (hi if u > 0 else -lo)), 0, 0)

    return _modulated("approach_retreat", images, fps, zoom)


def side_to_side(images: Sequence[np.ndarray], fps: float, period_s: float = 0.8,
                 amplitude: float = 0.3) -> StressDriver:
    """Fast side-to-side motion: shifts of ``amplitude`` × the frame width, ``period_s`` s a swing."""

    def shift(im: np.ndarray, t: float) -> np.ndarray:
        return _affine(im, 1.0, amplitude * im.shape[1] * math.sin(2 * math.pi * t / period_s), 0)

    return _modulated("side_to_side", images, fps, shift)


def second_face(user: Sequence[np.ndarray], other: Sequence[np.ndarray], fps: float,
                enter_s: float = 1.0, other_scale: float = 1.15) -> StressDriver:
    """The user on the left of a wide frame; after ``enter_s`` another, slightly *larger*
    person slides in from the right and stays (a tracker taking the largest face switches)."""
    h, w = user[0].shape[:2]
    canvas_w = int(w * 1.9)
    images = []
    for i, im in enumerate(user):
        canvas = np.full((h, canvas_w, 3), PAD_GREY, np.uint8)
        canvas[:, :w] = im
        t = i / fps
        if t >= enter_s:
            o = other[i % len(other)]
            side = int(h * other_scale * 0.72)
            o = cv2.resize(o, (side, side), interpolation=cv2.INTER_AREA)
            u = min(1.0, (t - enter_s) / 1.0)
            x0 = int(canvas_w - u * (canvas_w - int(w * 0.95)))
            y0 = (h - side) // 2
            vis = max(0, min(side, canvas_w - x0))
            if vis:
                canvas[y0:y0 + side, x0:x0 + vis] = o[:, :vis]
        images.append(canvas)
    return StressDriver("second_face", _frames(images, fps), fps, [list(user)])


def _synthetic(name: str, poses: Sequence[FacePose], fps: float, shot: int | None = None,
               size=(512, 512)) -> StressDriver:
    frames = []
    for i, pose in enumerate(poses):
        lm = synthetic_landmarks(pose, size)
        frames.append(Frame(image=draw_mesh(lm), timestamp=i / fps, index=i, landmarks=lm))
    lms = [f.landmarks for f in frames]
    shot = shot or len(lms)
    return StressDriver(name, frames, fps, natural_landmarks=[lms[i:i + shot] for i in range(0, len(lms), shot)])


def profile_turns(fps: float = 25.0, seconds: float = 6.0, max_yaw: float = 60.0) -> StressDriver:
    """The synthetic face, talking, turns to ``+max_yaw``° profile and to ``-max_yaw``° and back."""
    poses = []
    for i in range(int(seconds * fps)):
        t = i / fps
        base = timeline_pose(3.5 + t)  # a talking stretch of the timeline, for the mouth
        yaw = max_yaw * math.sin(2 * math.pi * max(0.0, t - 0.5) / (seconds - 1.0)) if t > 0.5 else 0.0
        poses.append(FacePose(yaw=yaw, jaw=base.jaw, pucker=base.pucker, blink_left=base.blink_left,
                              blink_right=base.blink_right))
    return _synthetic("profile_turns", poses, fps)


SYNTHETIC_SHOTS = (FacePose(), FacePose(yaw=25, shift=(0.9, 0.3), scale=1.8),
                   FacePose(roll=-15, shift=(-0.8, -0.2), scale=0.6), FacePose(pitch=15, shift=(0.4, 0.0), scale=1.3))


def random_shots(seed: int, count: int = 4) -> list[FacePose]:
    """``count`` shots for :func:`synthetic_cut`: the first at rest (the neutral a user starts in), the
    others drawn from ``seed`` over the span of :data:`SYNTHETIC_SHOTS` (yaw, pitch, roll ±25°/±15°/±15°,
    shift ±0.9 / ±0.3 face widths, scale 0.6–1.8× log-uniform)."""
    rng = np.random.default_rng(seed)
    return [FacePose()] + [
        FacePose(yaw=float(rng.uniform(-25, 25)), pitch=float(rng.uniform(-15, 15)), roll=float(rng.uniform(-15, 15)),
                 shift=(float(rng.uniform(-0.9, 0.9)), float(rng.uniform(-0.3, 0.3))),
                 scale=float(math.exp(rng.uniform(math.log(0.6), math.log(1.8)))))
        for _ in range(count - 1)]


def synthetic_cut(fps: float = 25.0, seconds: float = 4.0, shots: Sequence[FacePose] = SYNTHETIC_SHOTS,
                  talk_seed: int = 0) -> StressDriver:
    """The synthetic timeline, cut every second to another place, size and head turn
    (what a shot cut looks like to the retargeter when no real clips are at hand); the talking,
    blinks and nods are :func:`timeline_pose`'s with ``talk_seed``."""
    poses = []
    for i in range(int(seconds * fps)):
        t = i / fps
        shot = shots[int(i // fps) % len(shots)]
        talk = timeline_pose(1.5 + t, seed=talk_seed)
        poses.append(replace(talk, yaw=talk.yaw + shot.yaw, pitch=talk.pitch + shot.pitch, roll=talk.roll + shot.roll,
                             shift=shot.shift, scale=shot.scale))
    return _synthetic("synthetic_cut", poses, fps, shot=int(fps))


def read_clips(paths: Sequence[Path], count: int, frames: int, size: int, folder: str | Path = ""
               ) -> tuple[list[list[np.ndarray]], float]:
    """``(frames of each clip, the first clip's frame rate)`` for ``count`` clips of different people
    (:func:`read_clip`); ``FileNotFoundError`` when fewer were found (in ``folder``)."""
    if len(paths) < count:
        raise FileNotFoundError(f"fewer than {count} usable clips of different people in {folder}")
    fps = cv2.VideoCapture(str(paths[0])).get(cv2.CAP_PROP_FPS) or 25.0
    return [read_clip(p, frames, size) for p in paths[:count]], fps


def real_stress_drivers(folder: str | Path, frames: int = 90, size: int = 384) -> list[StressDriver]:
    """The real-clip stress drivers: shot cuts between three people, approach/retreat,
    side-to-side and a second face, each ``frames`` long (fewer if the clips are short)."""
    clips, fps = read_clips(clips_of_different_people(folder, 3, min_frames=frames), 3, frames, size, folder)
    third = frames // 3
    return [
        shot_cut([c[:third * 2] for c in clips], fps, shot=max(10, frames // 6)),
        approach_retreat(clips[0], fps, period_s=frames / fps),
        side_to_side(clips[1], fps),
        second_face(clips[2], clips[0], fps),
    ]
