"""``avatar-app prepare`` on real videos written here, judged by real mediapipe and dlib.

The source tree holds a synthetic animation of a real face (the astronaut portrait
animated by the geometric animator along the synthetic driver's timeline, pasted into a
640x480 frame) as an mp4, a frame folder of Grace Hopper animated the same way, a file
that is not a video, and a video of noise with no face in it.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from avatar_app.capture.synthetic import FacePose, synthetic_landmarks, timeline_pose
from avatar_app.errors import InputFileError
from avatar_app.face.align import CropBox, transform_points
from avatar_app.face.retarget import Retargeter
from avatar_app.models.identity import IdentityEncoder, identity_distance
from avatar_app.runtime.animator import GeometricAnimator
from avatar_app.train.commands import add_prepare_parser, run_prepare
from avatar_app.train.prepare import prepare_dataset
from avatar_app.train.synthetic import generate_synthetic_dataset

PORTRAITS = Path(__file__).resolve().parents[1] / "assets" / "portraits"
CANVAS = (640, 480)
OFFSET = (200, 100)  # where the 256 avatar crop sits in the canvas


def _animation(source, frames: int, seed: int, t0: float = 2.0) -> tuple[list[np.ndarray], np.ndarray]:
    """The source animated along the synthetic timeline, each crop pasted into a 640x480 frame.

    Returns the frames and the animator's targets in frame px ``(frames, 478, 3)``.
    """
    animator = GeometricAnimator(source)
    retarget = Retargeter(source.landmarks)
    retarget.calibrate(synthetic_landmarks(FacePose()))
    x = np.linspace(60, 140, CANVAS[0], dtype=np.float32)
    background = np.repeat(np.repeat(x[None, :, None], CANVAS[1], 0), 3, 2).astype(np.uint8)
    out, targets = [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small flows: one thread is as fast, and far faster on a busy machine
    try:
        for i in range(frames):
            target = retarget(synthetic_landmarks(timeline_pose(t0 + i / 25.0, seed=seed)))
            frame = background.copy()
            frame[OFFSET[1]:OFFSET[1] + 256, OFFSET[0]:OFFSET[0] + 256] = animator.animate(target)
            out.append(frame)
            targets.append(target.points + np.array([OFFSET[0], OFFSET[1], 0], np.float32))
    finally:
        torch.set_num_threads(threads)
    return out, np.stack(targets)


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()


@pytest.fixture(scope="module")
def src_tree(tmp_path_factory, astronaut_source, hopper_source) -> tuple[Path, np.ndarray]:
    """The source folder, and the true landmarks of personA's video (frame px)."""
    src = tmp_path_factory.mktemp("videos")
    frames, truth = _animation(astronaut_source, 24, seed=1)
    _write_video(src / "personA" / "clip1.mp4", frames)
    folder = src / "personB" / "clip2"
    folder.mkdir(parents=True)
    for i, frame in enumerate(_animation(hopper_source, 10, seed=2, t0=3.0)[0]):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), frame)
    (src / "personC").mkdir()
    (src / "personC" / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    noise = np.random.default_rng(1).integers(0, 256, size=(10, 120, 160, 3), dtype=np.uint8)
    _write_video(src / "personD" / "empty.mp4", list(noise))
    return src, truth


@pytest.fixture(scope="module")
def prepared(src_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "data"
    report = prepare_dataset(src_tree[0], out, workers=1, progress=False)
    return out, report


GOOD = ("personA__clip1", "personB__clip2")


def test_manifest(prepared, src_tree):
    out, report = prepared
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "avatar-app-dataset" and manifest["version"] == 1
    assert manifest["sizes"] == [256] and manifest["synthetic"] is False
    assert manifest["source"] == str(src_tree[0].resolve())
    clips = {c["key"]: c for c in manifest["clips"]}
    assert sorted(clips) == list(GOOD) == report.clips_done
    a, b = clips["personA__clip1"], clips["personB__clip2"]
    assert (a["identity"], a["source"], a["frames"], a["fps"]) == ("personA", "personA/clip1.mp4", 24, 25.0)
    assert (b["identity"], b["source"], b["frames"], b["fps"]) == ("personB", "personB/clip2", 10, 25.0)
    assert a["valid"] == 24 and b["valid"] == 10


def test_clip_files(prepared, still_tracker):
    out, _ = prepared
    for key, n in zip(GOOD, (24, 10)):
        d = out / "clips" / key
        meta = json.loads((d / "meta.json").read_text())
        assert meta["key"] == key and meta["frames"] == n and meta["reference_frame"] == 0
        assert set(meta["crop"]) == {"center", "side", "angle"}
        crops = sorted((d / "256").iterdir())
        assert [p.name for p in crops] == [f"{i:06d}.jpg" for i in range(n)]
        assert cv2.imread(str(crops[0])).shape == (256, 256, 3)
        lm, valid = np.load(d / "landmarks.npy"), np.load(d / "valid.npy")
        assert lm.shape == (n, 478, 3) and lm.dtype == np.float32
        assert valid.shape == (n,) and valid.dtype == bool and valid.all()
        assert lm[..., :2].min() > 0 and lm[..., :2].max() < 255
        emb = np.load(d / "identity.npy")
        assert emb.shape == (128,) and emb.dtype == np.float32
        # the prepared landmarks sit on the face in the saved crop, as mediapipe sees it there
        errors = []
        for i in (0, n // 3, 2 * n // 3, n - 1):
            found = still_tracker.detect_faces(cv2.imread(str(crops[i])))
            assert found
            errors.append(np.linalg.norm(found[0].xy - lm[i, :, :2], axis=1).mean())
        assert np.mean(errors) < 3.0 and max(errors) < 4.5, (key, errors)


def test_landmarks_follow_the_true_face(prepared, src_tree):
    """personA's video was made from known landmarks: the prepared ones, in crop px, match them."""
    out, _ = prepared
    d = out / "clips" / "personA__clip1"
    crop = json.loads((d / "meta.json").read_text())["crop"]
    box = CropBox(tuple(crop["center"]), crop["side"], crop["angle"])
    truth = np.stack([transform_points(p, box.image_to_crop(256)) for p in src_tree[1]])
    err = np.linalg.norm(np.load(d / "landmarks.npy")[..., :2] - truth[..., :2], axis=2).mean(axis=1)
    assert err.mean() < 3.0 and err.max() < 4.5, err


def test_identity_is_the_person(prepared, astronaut_source):
    out, _ = prepared
    ref = IdentityEncoder().embed(astronaut_source.crop, astronaut_source.landmarks)
    assert identity_distance(np.load(out / "clips" / "personA__clip1" / "identity.npy"), ref) < 0.6


def test_bad_clips_are_skipped_with_reasons(prepared):
    out, report = prepared
    reasons = dict(report.clips_skipped)
    assert set(reasons) == {"personC/broken.mp4", "personD/empty.mp4"}
    assert "decoded" in reasons["personC/broken.mp4"]
    assert "no face" in reasons["personD/empty.mp4"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert {s["source"]: s["reason"] for s in manifest["skipped"]} == reasons
    text = (out / "report.md").read_text()
    for source, reason in reasons.items():
        assert source in text and reason in text
    assert not (out / "clips" / "personC__broken").exists() and not (out / "clips" / "personD__empty").exists()


def test_rerun_skips_complete_clips(prepared, src_tree):
    out, _ = prepared
    files = [out / "clips" / k / name for k in GOOD for name in ("meta.json", "landmarks.npy", "256/000000.jpg")]
    before = [p.stat().st_mtime_ns for p in files]
    report = prepare_dataset(src_tree[0], out, workers=1, progress=False)
    assert report.clips_done == [] and sorted(report.clips_already_done) == list(GOOD)
    assert [p.stat().st_mtime_ns for p in files] == before
    assert {s for s, _ in report.clips_skipped} == {"personC/broken.mp4", "personD/empty.mp4"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["key"] for c in manifest["clips"]] == list(GOOD) and len(manifest["skipped"]) == 2


def test_two_workers_give_the_same_landmarks(prepared, src_tree, tmp_path):
    out, first = prepared
    report = prepare_dataset(src_tree[0], tmp_path / "data", workers=2, progress=False)
    assert report.clips_done == list(GOOD) and dict(report.clips_skipped).keys() == dict(first.clips_skipped).keys()
    for key in GOOD:
        a = np.load(out / "clips" / key / "landmarks.npy")
        b = np.load(tmp_path / "data" / "clips" / key / "landmarks.npy")
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_empty_or_missing_source(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no videos here")
    with pytest.raises(InputFileError, match="no videos"):
        prepare_dataset(tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(InputFileError, match="does not exist"):
        prepare_dataset(tmp_path / "missing", tmp_path / "out", progress=False)


def test_cli_parser(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    add_prepare_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["prepare", str(PORTRAITS / "astronaut.jpg"), str(tmp_path / "syn"), "--synthetic",
                              "--clips-per-portrait", "1", "--frames", "2", "--no-progress"])
    assert args.sizes == [256] and args.workers == 2
    assert run_prepare(args) == 0
    line = capsys.readouterr().out
    assert "prepared 1 clip" in line and "report.md" in line


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "data"
    two = [PORTRAITS / "astronaut.jpg", PORTRAITS / "grace_hopper.jpg"]
    report = generate_synthetic_dataset(two, out, clips_per_portrait=2, frames=12, progress=False)
    return out, report


def test_synthetic_dataset(synthetic, still_tracker):
    out, report = synthetic
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "avatar-app-dataset" and manifest["synthetic"] is True
    keys = [c["key"] for c in manifest["clips"]]
    assert keys == ["astronaut__synth00", "astronaut__synth01", "grace_hopper__synth00", "grace_hopper__synth01"]
    assert report.clips_done == keys and not report.clips_skipped
    assert {c["identity"] for c in manifest["clips"]} == {"astronaut", "grace_hopper"}
    for key in keys:
        d = out / "clips" / key
        lm = np.load(d / "landmarks.npy")
        assert lm.shape == (12, 478, 3) and np.load(d / "valid.npy").all()
        assert np.load(d / "identity.npy").shape == (128,)
        assert len(list((d / "256").iterdir())) == 12
        # the stored targets are where mediapipe finds the animated face
        i = 7
        found = still_tracker.detect_faces(cv2.imread(str(d / "256" / f"{i:06d}.jpg")))
        assert found
        err = np.linalg.norm(found[0].xy - lm[i, :, :2], axis=1).mean()
        assert err < 4.0, (key, err)
    # each clip differs (its own timeline offset and augmentation)
    a = np.load(out / "clips" / keys[0] / "landmarks.npy")
    b = np.load(out / "clips" / keys[1] / "landmarks.npy")
    assert np.abs(a - b).mean() > 1.0
