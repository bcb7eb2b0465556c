"""Face tracking with mediapipe's 478-point face mesh (468 mesh + 10 iris points).

Two ways to run mediapipe, chosen by whether a model file is given:

* the **legacy FaceMesh solution** bundled in ``mediapipe==0.10.21`` (no download;
  the default), with ``refine_landmarks=True`` for the iris points;
* the **Tasks API** ``FaceLandmarker`` when the user passes a ``.task`` file (newer
  mediapipe releases ship no models, so the file must come from the user).

Video frames are tracked (mediapipe re-uses the last face region, much faster than
detecting every frame) and smoothed causally with a One-Euro filter, restarted when the
followed face jumps (a shot cut: :func:`~.jumps.is_jump` on the raw landmarks) or stops looking
like itself (another person where the face was: :func:`~.appearance.is_other_look`); still images
go through :meth:`FaceTracker.detect_faces` (static mode, several faces).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from ..errors import DependencyError, InputFileError
from ..types import NUM_LANDMARKS, Frame, Landmarks, TrackResult
from .appearance import Look, LookThresholds, face_look, is_other_look
from .jumps import JumpThresholds, is_jump
from .mesh import eye_centers
from .smoothing import EYE_SMOOTHING, FACE_SMOOTHING, LandmarkSmoother

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _native_stderr_silenced():
    """Silence C++ log lines (mediapipe/TFLite start-up chatter) written straight to fd 2.

    Used only around engine creation and its first frame; with debug logging on,
    nothing is silenced.
    """
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _import_mediapipe():
    try:
        import mediapipe as mp
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DependencyError(
            "Face tracking needs mediapipe, which is not installed; install it with "
            "'pip install mediapipe==0.10.21' (or reinstall avatar-app)."
        ) from exc
    return mp


def _to_landmarks(norm: np.ndarray, width: int, height: int) -> Landmarks:
    """mediapipe normalised ``(478, 3)`` -> :class:`Landmarks` in px (pixel centres at integers)."""
    pts = np.empty((NUM_LANDMARKS, 3), np.float32)
    pts[:, 0] = norm[:NUM_LANDMARKS, 0] * width - 0.5
    pts[:, 1] = norm[:NUM_LANDMARKS, 1] * height - 0.5
    pts[:, 2] = norm[:NUM_LANDMARKS, 2] * width
    inside = np.mean((pts[:, 0] >= 0) & (pts[:, 0] < width) & (pts[:, 1] >= 0) & (pts[:, 1] < height))
    return Landmarks(pts, (width, height), float(inside))


def face_area(lm: Landmarks) -> float:
    x, y = lm.xy[:, 0], lm.xy[:, 1]
    return float((x.max() - x.min()) * (y.max() - y.min()))


class FaceTracker:
    """Landmarks for video frames (tracked, smoothed) and still images (all faces).

    Args:
        model_path: a mediapipe ``face_landmarker.task`` file to use the Tasks API;
            ``None`` uses the bundled FaceMesh solution.
        min_detection_confidence / min_tracking_confidence: mediapipe thresholds.
        smoothing: One-Euro ``(min_cutoff Hz, beta)``, or ``None`` for raw landmarks.
        eye_smoothing: One-Euro ``(min_cutoff Hz, beta, d_cutoff Hz)`` of the lids' and irises'
            motion in the face (:class:`~.smoothing.LandmarkSmoother`: quick enough for a blink),
            or ``None`` to smooth them as the face.
        max_faces: most faces :meth:`detect_faces` returns.
        track_faces: most faces looked at in video frames; with more than one visible the
            tracker follows the face nearest the one it followed last (the largest when it
            had none), not whichever mediapipe lists first.
        jump_thresholds: when the followed face's raw landmarks jump from the last frame's
            (:func:`~.jumps.is_jump`, the driver guard's own test: a shot cut, even between two
            faces at the same place and size) the smoothing restarts, so the cut shows in one
            frame instead of being spread over several as motion, and the frame's
            :class:`TrackResult` says ``cut`` (the guard's test on the smoothed landmarks alone
            can miss it by a little: the last smoothed face lagged).
        look_thresholds: likewise when the followed face stops looking like the last frame's
            (:func:`~.appearance.is_other_look`: its skin's colour and the layout of its light and
            dark, from the frame and the raw landmarks): a cut to another person whose face sits
            where the last one did, at its size, which the landmarks alone cannot tell; ``None``
            leaves the look out.
    """

    def __init__(self, model_path: str | Path | None = None, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, smoothing: tuple[float, float] | None = FACE_SMOOTHING,
                 max_faces: int = 4, track_faces: int = 2, eye_smoothing: tuple | None = EYE_SMOOTHING,
                 jump_thresholds: JumpThresholds = JumpThresholds(),
                 look_thresholds: LookThresholds | None = LookThresholds()):
        self.model_path = Path(model_path) if model_path else None
        if self.model_path is not None and not self.model_path.is_file():
            raise InputFileError(
                f"Face landmarker model '{self.model_path}' does not exist; pass a mediapipe .task file "
                "or leave the option out to use the bundled tracker."
            )
        self.min_detection_confidence = min_detection_confidence
        self.min_tracking_confidence = min_tracking_confidence
        self.max_faces = max_faces
        self.track_faces = max(1, int(track_faces))
        self._followed: np.ndarray | None = None  # (x, y, inter-ocular px) of the last raw face followed
        self._raw: tuple[float, Landmarks] | None = None  # (time, raw landmarks) of last frame's followed face
        self.jump_thresholds = jump_thresholds
        self.look_thresholds = look_thresholds
        self._look: Look | None = None  # last frame's look of the followed face
        self.look_cuts = 0  # cuts the look saw that the landmarks did not
        self.restarts = 0  # smoothing restarts on a followed face that jumped or was elsewhere
        self._filter = LandmarkSmoother(smoothing, eye_smoothing) if smoothing else None
        self._video = None
        self._static = None
        self._last_ts_ms = -1

    # -- mediapipe engines -------------------------------------------------------------
    def _make(self, static: bool, max_faces: int):
        mp = _import_mediapipe()
        if self.model_path is None:
            return mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static, max_num_faces=max_faces, refine_landmarks=True,
                min_detection_confidence=self.min_detection_confidence,
                min_tracking_confidence=self.min_tracking_confidence,
            )
        from mediapipe.tasks.python import BaseOptions, vision

        try:
            options = vision.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(self.model_path)),
                running_mode=vision.RunningMode.IMAGE if static else vision.RunningMode.VIDEO,
                num_faces=max_faces,
                min_face_detection_confidence=self.min_detection_confidence,
                min_tracking_confidence=self.min_tracking_confidence,
            )
            return vision.FaceLandmarker.create_from_options(options)
        except (RuntimeError, ValueError) as exc:
            raise InputFileError(
                f"'{self.model_path}' is not a usable mediapipe face landmarker model ({exc}); "
                "download face_landmarker.task from mediapipe's model page or leave the option out."
            ) from exc

    def _run(self, engine, image_bgr: np.ndarray, timestamp: float | None) -> list[np.ndarray]:
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        if self.model_path is None:
            res = engine.process(rgb)
            faces = res.multi_face_landmarks or []
            return [np.array([(p.x, p.y, p.z) for p in f.landmark], np.float32) for f in faces]
        import mediapipe as mp

        img = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        if timestamp is None:
            res = engine.detect(img)
        else:
            ts = max(int(timestamp * 1000), self._last_ts_ms + 1)
            self._last_ts_ms = ts
            res = engine.detect_for_video(img, ts)
        return [np.array([(p.x, p.y, p.z) for p in f], np.float32) for f in res.face_landmarks]

    # -- public API -------------------------------------------------------------------------
    def detect_faces(self, image_bgr: np.ndarray) -> list[Landmarks]:
        """All faces in a still image, largest first."""
        fresh = self._static is None
        with _native_stderr_silenced() if fresh else contextlib.nullcontext():
            if fresh:
                self._static = self._make(static=True, max_faces=self.max_faces)
            raw = self._run(self._static, image_bgr, None)
        h, w = image_bgr.shape[:2]
        faces = [_to_landmarks(f, w, h) for f in raw]
        return sorted(faces, key=face_area, reverse=True)

    def track(self, frame: Frame) -> TrackResult:
        """Landmarks of the main face in a video frame (tracked and smoothed).

        Frames that already carry landmarks (the synthetic driver) pass through.
        """
        if frame.landmarks is not None:
            return TrackResult(frame.landmarks, frame.landmarks.confidence, frame.timestamp)
        fresh = self._video is None
        with _native_stderr_silenced() if fresh else contextlib.nullcontext():
            if fresh:
                self._video = self._make(static=False, max_faces=self.track_faces)
            faces = self._run(self._video, frame.image, frame.timestamp)
        h, w = frame.image.shape[:2]
        if not faces:
            if self._filter is not None:
                self._filter.reset()
            self._raw = self._look = None
            return TrackResult(None, 0.0, frame.timestamp)
        lm, away = self._follow([_to_landmarks(f, w, h) for f in faces])
        last, self._raw = self._raw, (frame.timestamp, lm)
        cut = last is not None and is_jump(last[1], lm, frame.timestamp - last[0], self.jump_thresholds)
        if self.look_thresholds is not None:
            look, before = face_look(frame.image, lm.points), self._look
            self._look = look
            if not cut and before is not None and is_other_look(before, look, self.look_thresholds):
                cut = True
                self.look_cuts += 1
        if self._filter is not None:
            if away or cut:
                self._filter.reset()
                self.restarts += 1
            lm = lm.with_points(self._filter(lm.points, frame.timestamp, scale=max(float(self._followed[2]), 1.0)))
        return TrackResult(lm, lm.confidence, frame.timestamp, cut=cut)

    def _follow(self, faces: list[Landmarks]) -> tuple[Landmarks, bool]:
        """The face to follow: nearest the last one followed, else the largest; and whether it
        is not where the last one was (a cut, another person: the smoothing restarts, so the
        filter never sweeps landmarks across the frame)."""
        def centre(lm: Landmarks) -> np.ndarray:
            eye_r, eye_l = eye_centers(lm.xy)
            return np.array([*(eye_r + eye_l) / 2, np.linalg.norm(eye_l - eye_r)])

        keyed = [(centre(f), f) for f in faces]
        last, away = self._followed, False
        if last is None:
            c, lm = max(keyed, key=lambda k: face_area(k[1]))
        else:
            c, lm = min(keyed, key=lambda k: float(np.linalg.norm(k[0][:2] - last[:2])))
            moved = float(np.linalg.norm(c[:2] - last[:2])) / max(last[2], 1.0)
            away = moved > 1.0 or abs(np.log(max(c[2], 1e-6) / max(last[2], 1e-6))) > 0.3
        self._followed = c
        return lm, away

    def reset(self) -> None:
        """Forget tracking state (a new video or camera)."""
        if self._video is not None:
            self._video.close()
            self._video = None
        if self._filter is not None:
            self._filter.reset()
        self._followed = None
        self._raw = self._look = None
        self._last_ts_ms = -1

    @property
    def closed(self) -> bool:
        """True when no mediapipe graph is open: after :meth:`close` (or before the first frame)."""
        return self._static is None and self._video is None

    def close(self) -> None:
        self.reset()
        if self._static is not None:
            self._static.close()
            self._static = None

    def __enter__(self) -> "FaceTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
