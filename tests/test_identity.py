"""dlib identity embedding on the two public-domain portraits."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

pytest.importorskip("dlib", reason="dlib is not installed (pip install dlib-bin face-recognition-models)",
                    exc_type=ImportError)
if importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip("face_recognition_models is not installed (pip install face-recognition-models)",
                allow_module_level=True)

from avatar_app.errors import DependencyError, NoFaceError
from avatar_app.models.identity import (
    IDENTITY_DIM,
    IdentityEncoder,
    identity_distance,
    model_files,
)


@pytest.fixture(scope="module")
def encoder() -> IdentityEncoder:
    return IdentityEncoder().load()


@pytest.fixture(scope="module")
def embeddings(encoder, astronaut, hopper) -> dict[str, np.ndarray]:
    """HOG-detector embeddings of the astronaut, her mirror image, and Grace Hopper."""
    return {
        "astronaut": encoder.embed(astronaut),
        "mirror": encoder.embed(cv2.flip(astronaut, 1)),
        "hopper": encoder.embed(hopper),
    }


def test_model_files_exist():
    files = model_files()
    assert files["recognition"].name == "dlib_face_recognition_resnet_model_v1.dat"
    assert files["shape_predictor"].name == "shape_predictor_5_face_landmarks.dat"
    assert all(p.is_file() for p in files.values())


def test_embedding_shape_and_determinism(encoder, astronaut, embeddings):
    e = embeddings["astronaut"]
    assert e.shape == (IDENTITY_DIM,) and e.dtype == np.float32 and np.all(np.isfinite(e))
    assert 0.5 < np.linalg.norm(e) < 2.0
    assert identity_distance(e, encoder.embed(astronaut)) < 1e-6


def test_other_person_is_farther_than_own_mirror_image(embeddings):
    other = identity_distance(embeddings["astronaut"], embeddings["hopper"])
    mirror = identity_distance(embeddings["astronaut"], embeddings["mirror"])
    assert other > mirror
    assert other > 0.6  # dlib's same-person threshold
    assert mirror < 0.6


def test_mirror_picks_the_face_not_a_larger_weak_detection(encoder, astronaut):
    # the flipped astronaut has a weak HOG hit on her suit that is larger than her face
    left, top, _right, bottom = encoder.detect(cv2.flip(astronaut, 1))
    assert top < 120 and bottom < 200 and 220 < left < 270


def test_landmark_box_matches_hog_box(encoder, astronaut, hopper, still_tracker, embeddings):
    for name, image in (("astronaut", astronaut), ("hopper", hopper)):
        lm = still_tracker.detect_faces(image)[0]
        hog = np.array(encoder.detect(image), float)
        box = np.array(encoder.face_box(lm), float)
        inter = np.clip(np.minimum(hog[2:], box[2:]) - np.maximum(hog[:2], box[:2]), 0, None).prod()
        union = np.prod(hog[2:] - hog[:2]) + np.prod(box[2:] - box[:2]) - inter
        assert inter / union > 0.6, name
        assert identity_distance(encoder.embed(image, lm), embeddings[name]) < 0.15, name


def test_prepared_source_crop_keeps_identity(encoder, astronaut_source, embeddings):
    e = encoder.embed(astronaut_source.crop, astronaut_source.landmarks)
    assert identity_distance(e, embeddings["astronaut"]) < 0.2
    assert identity_distance(e, embeddings["hopper"]) > 0.6


def test_no_face_raises(encoder):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    smooth = cv2.GaussianBlur(noise, (0, 0), 6)
    with pytest.raises(NoFaceError):
        encoder.embed(smooth)


def test_landmarks_of_another_image_size_are_rejected(encoder, astronaut_source, hopper):
    with pytest.raises(ValueError):
        encoder.embed(hopper, astronaut_source.landmarks)


def test_identity_distance():
    a, b = np.zeros(IDENTITY_DIM), np.zeros(IDENTITY_DIM)
    b[0] = 0.7
    assert identity_distance(a, b) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        identity_distance(a, np.zeros(64))


@pytest.mark.parametrize("missing", ["face_recognition_models", "dlib"])
def test_missing_package_raises_dependency_error(monkeypatch, missing):
    real = importlib.util.find_spec

    def fake(name, *args, **kwargs):
        return None if name == missing else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(DependencyError, match="pip install"):
        model_files()
    with pytest.raises(DependencyError):
        IdentityEncoder().embed(np.zeros((64, 64, 3), np.uint8))
