"""The source identity embedding: dlib's 128-d face-recognition ResNet.

MetaPortrait's generator blends SPADE(x) with AdaIN(x, id), where ``id`` is a
pretrained face-recognition embedding of the source.  We use dlib's ResNet
(``dlib_face_recognition_resnet_model_v1.dat``) with its 5-point shape predictor,
both shipped by the ``face-recognition-models`` package, so it runs offline on CPU
(roughly 0.1-0.2 s per face).

Two embeddings of the same person are usually closer than 0.6 (Euclidean), dlib's
own same-person threshold; the astronaut and Grace Hopper portraits are ~0.70 apart.

Nothing here imports dlib at module import time: :data:`IDENTITY_DIM` is used by
the networks on machines without dlib.  ``face_recognition_models`` itself is never
imported (its ``__init__`` needs ``pkg_resources``, which new setuptools lacks); its
model files are located through its import spec instead.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import cv2
import numpy as np

from ..errors import DependencyError, NoFaceError
from ..face.mesh import topology
from ..types import Landmarks

IDENTITY_DIM = 128
SAME_PERSON_THRESHOLD = 0.6  # dlib's documented threshold for its 128-d embedding

_PACKAGE = "face_recognition_models"
_FILES = {
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
    "shape_predictor": "shape_predictor_5_face_landmarks.dat",
}
_INSTALL = "pip install dlib-bin face-recognition-models"

# landmark face box (see IdentityEncoder.face_box): shifted up by this fraction of its side
_BOX_SHIFT_UP = 0.04
_MIN_BOX = 8  # px


def _package_files(keys=tuple(_FILES)) -> dict[str, Path]:
    """The model files ``keys`` inside the installed ``face_recognition_models`` package (dlib not needed)."""
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DependencyError(
            f"The identity embedding needs the face-recognition-models package, which is not installed; "
            f"run `{_INSTALL}`.")
    folder = Path(locations[0]) / "models"
    files = {key: folder / _FILES[key] for key in keys}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise DependencyError(
            f"The face-recognition-models package in {folder.parent} lacks {', '.join(missing)}; "
            f"reinstall it with `pip install --force-reinstall face-recognition-models`.")
    return files


def model_files() -> dict[str, Path]:
    """Paths of dlib's models inside the installed ``face_recognition_models`` package.

    Returns:
        ``{"recognition": .../dlib_face_recognition_resnet_model_v1.dat,
        "shape_predictor": .../shape_predictor_5_face_landmarks.dat}``.

    Raises:
        DependencyError: dlib, the package or one of its files is missing.
    """
    if importlib.util.find_spec("dlib") is None:
        raise DependencyError(f"The identity embedding needs dlib, which is not installed; run `{_INSTALL}`.")
    return _package_files()


def recognition_model_file() -> Path:
    """dlib's face-recognition ResNet file, for its torch port (:mod:`.face_embedding`),
    which needs the ``face-recognition-models`` package but not dlib.

    Raises:
        DependencyError: the package or the file is missing.
    """
    return _package_files(("recognition",))["recognition"]


def identity_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two identity embeddings.

    Below 0.6 (:data:`SAME_PERSON_THRESHOLD`, dlib's threshold) the two faces are
    most likely the same person; different people are typically 0.6-1.0 apart.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"identity embeddings differ in size: {a.shape} vs {b.shape}")
    return float(np.linalg.norm(a - b))


def _to_rgb(image_bgr: np.ndarray) -> np.ndarray:
    img = np.asarray(image_bgr)
    if img.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    raise ValueError(f"expected a BGR image (H, W, 3), got shape {img.shape}")


class IdentityEncoder:
    """dlib's face-recognition embedding of one face in a BGR image.

    The models load on first use (about 0.2 s; dlib's HOG face detector another
    0.7 s, and only when no landmarks are given).  One instance may be shared
    between threads: loading is locked, and dlib's calls are reentrant.
    """

    def __init__(self, files: dict[str, Path] | None = None) -> None:
        self._files = files
        self._lock = threading.Lock()
        self._predictor = None
        self._net = None
        self._detector = None

    def load(self) -> IdentityEncoder:
        """Load the shape predictor and the recognition net now (otherwise on first use)."""
        with self._lock:
            if self._net is None:
                files = self._files or model_files()
                import dlib

                self._predictor = dlib.shape_predictor(str(files["shape_predictor"]))
                self._net = dlib.face_recognition_model_v1(str(files["recognition"]))
        return self

    def _get_detector(self):
        with self._lock:
            if self._detector is None:
                import dlib

                self._detector = dlib.get_frontal_face_detector()
            return self._detector

    @staticmethod
    def face_box(landmarks: Landmarks | np.ndarray) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` px: a square box around the landmarks like
        dlib's HOG detector gives, from the eyebrows to the chin.

        Side = mean of the face-oval width and the brows-to-chin height, centred on
        them and shifted up by 4 % (on the two test portraits the HOG box and this one
        give embeddings 0.00-0.09 apart).
        """
        pts = np.asarray(getattr(landmarks, "points", landmarks), dtype=np.float64)[:, :2]
        topo = topology()
        oval = pts[topo.face_oval]
        brows = pts[np.concatenate([topo.right_brow, topo.left_brow])]
        x0, x1 = oval[:, 0].min(), oval[:, 0].max()
        y0, y1 = brows[:, 1].min(), oval[:, 1].max()
        side = 0.5 * ((x1 - x0) + (y1 - y0))
        cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1) - _BOX_SHIFT_UP * side
        half = 0.5 * side
        return (round(cx - half), round(cy - half), round(cx + half), round(cy + half))

    def detect(self, image_bgr: np.ndarray) -> tuple[int, int, int, int]:
        """The main face's box by dlib's HOG detector: ``(left, top, right, bottom)`` px.

        The largest of the confident detections (score at least half the best one:
        dlib also reports weak hits, e.g. on a shirt badge, that can be larger than
        the face).  Tries the image as is, then upsampled once for small faces.

        Raises:
            NoFaceError: no face found.
        """
        return self._detect_rgb(_to_rgb(image_bgr))

    def _detect_rgb(self, rgb: np.ndarray) -> tuple[int, int, int, int]:
        detector = self._get_detector()
        for upsample in (0, 1):
            rects, scores, _ = detector.run(rgb, upsample)
            if len(rects):
                break
        else:
            raise NoFaceError(
                "No face was found in the image for the identity embedding; use a clear, frontal, "
                "well-lit photo of one face.")
        best = max(scores)
        keep = [r for r, s in zip(rects, scores) if s >= 0.5 * best]
        r = max(keep, key=lambda r: r.width() * r.height())
        return (r.left(), r.top(), r.right(), r.bottom())

    def embed(self, image_bgr: np.ndarray, landmarks: Landmarks | None = None) -> np.ndarray:
        """The identity embedding of the face in ``image_bgr``: ``(128,) float32``.

        Args:
            image_bgr: ``(H, W, 3) uint8`` BGR (grey or BGRA are accepted too).
            landmarks: the face's landmarks in px of this image; they give the face
                box.  Without them dlib's HOG detector finds the face (the largest).

        Raises:
            NoFaceError: no landmarks given and no face detected, or the landmark
                box is degenerate.
            DependencyError: dlib or its models are missing.
        """
        self.load()
        rgb = _to_rgb(image_bgr)
        if landmarks is not None:
            size = getattr(landmarks, "image_size", None)
            h, w = rgb.shape[:2]
            if size is not None and tuple(size) != (w, h):
                raise ValueError(f"landmarks are for a {size[0]}x{size[1]} image, not this {w}x{h} one")
            pts = np.asarray(getattr(landmarks, "points", landmarks), dtype=np.float64)
            box = self.face_box(pts) if np.all(np.isfinite(pts)) else (0, 0, 0, 0)
            if min(box[2] - box[0], box[3] - box[1]) < _MIN_BOX:
                raise NoFaceError(
                    "The face in the image is too small for the identity embedding; use a photo where "
                    "the face is larger.")
        else:
            box = self._detect_rgb(rgb)
        import dlib

        shape = self._predictor(rgb, dlib.rectangle(*box))
        vec = self._net.compute_face_descriptor(rgb, shape, 1)
        return np.asarray(vec, dtype=np.float32).reshape(IDENTITY_DIM)
