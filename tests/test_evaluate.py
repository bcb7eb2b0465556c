"""avatar-app evaluate on a tiny prepared dataset built here (docs/DATASET.md, version 1).

Two identities × one clip × 10 frames: the geometric animator drives each test portrait
with the synthetic driver's opening second (retargeted), the animated crops are the frames
(JPEG q95) and the retargeted landmarks are the prepared landmarks — so the geometric
animator, re-run from the clip's first frame, should reproduce the frames closely.
"""

from __future__ import annotations

import argparse
import json
import shutil
import zlib

import cv2
import numpy as np
import pytest
import torch

from avatar_app.capture.synthetic import synthetic_landmarks, timeline_pose
from avatar_app.errors import DependencyError, InputFileError
from avatar_app.face.retarget import Retargeter
from avatar_app.models.identity import IdentityEncoder
from avatar_app.runtime.animator import GeometricAnimator
from avatar_app.train import evaluate as evaluate_module
from avatar_app.train.split import SPLIT_RULE, split_clips
from avatar_app.train.eval_clips import run_clips
from avatar_app.train.evaluate import add_evaluate_parser, evaluate, run_evaluate
from avatar_app.train.report import SHEET_COLUMNS, format_table

FRAMES = 10


def _write_clip(root, key: str, identity: str, source) -> dict:
    folder = root / "clips" / key
    (folder / "256").mkdir(parents=True)
    animator = GeometricAnimator(source)
    retarget = Retargeter(source.landmarks)
    points = []
    for i in range(FRAMES):
        target = retarget(synthetic_landmarks(timeline_pose(1 + i / 10)))
        image = animator.animate(target)
        assert cv2.imwrite(str(folder / "256" / f"{i:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        points.append(target.points)
    np.save(folder / "landmarks.npy", np.stack(points).astype(np.float32))
    np.save(folder / "valid.npy", np.ones(FRAMES, bool))
    try:
        np.save(folder / "identity.npy", IdentityEncoder().embed(source.crop, source.landmarks))
    except DependencyError:  # dlib missing: the format allows identity.npy to be absent
        pass
    entry = {"key": key, "identity": identity, "frames": FRAMES, "valid": FRAMES, "fps": 25.0,
             "source": f"{identity}/clip01.mp4"}
    meta = dict(entry, crop={"center": [128.0, 128.0], "side": 256.0, "angle": 0.0}, reference_frame=0)
    (folder / "meta.json").write_text(json.dumps(meta))
    return entry


def _write_manifest(root, clips: list[dict]) -> None:
    manifest = {"format": "avatar-app-dataset", "version": 1, "sizes": [256], "source": str(root),
                "synthetic": True, "clips": clips, "skipped": []}
    (root / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, astronaut_source, hopper_source):
    root = tmp_path_factory.mktemp("prepared")
    clips = [_write_clip(root, "astronaut__clip01", "astronaut", astronaut_source),
             _write_clip(root, "hopper__clip01", "hopper", hopper_source)]
    _write_manifest(root, clips)
    (root / "report.md").write_text("test dataset\n")
    return root


@pytest.fixture(scope="module")
def evaluated(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    # one torch thread: on a shared 2-core machine, torch's 2-thread pool can run the lite
    # networks 10-20x slower under contention (3-4 s instead of 0.2 s a frame)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        aggregate = evaluate(prepared, out, split="all", clips=2, frames=8, progress=False)
    finally:
        torch.set_num_threads(threads)
    return aggregate, out


def test_metrics_json(evaluated):
    aggregate, out = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["aggregate"] == aggregate
    assert set(aggregate) >= {"geometric", "neural", "static"}
    assert [c["key"] for c in metrics["clips"]] == ["astronaut__clip01", "hopper__clip01"]
    for clip in metrics["clips"]:
        assert clip["source_frame"] == 0 and clip["frames"] == list(range(1, 9))
        for name in ("geometric", "neural"):
            m = clip["animators"][name]
            assert m["frames"] == 8
            assert set(m) >= {"psnr", "ssim", "l1", "landmark_error", "faces_missed", "identity_distance", "jitter"}
    assert metrics["settings"]["split"] == "all" and metrics["settings"]["weights"] is None
    assert "untrained lite" in metrics["settings"]["neural"]
    assert SPLIT_RULE in metrics["split_rule"]
    print("\nmeasured:", json.dumps(aggregate, indent=1), "ground truth:", metrics["ground_truth"])


def test_a_runs_clips_are_read_again_at_its_size(evaluated, prepared):
    """eval_clips.run_clips, the tools' way back from a metrics.json to the frames it scored."""
    _, out = evaluated
    run = json.loads((out / "metrics.json").read_text())
    again = list(run_clips(prepared, run))
    assert [record["key"] for record, _, _ in again] == ["astronaut__clip01", "hopper__clip01"]
    for record, clip, reason in again:
        assert reason == "" and clip.key == record["key"] and clip.size == 256
        assert clip.image(record["frames"][0]).shape == (256, 256, 3)
    for record, gaze in zip(run["clips"], (None, 0.5)):  # only the second clip with a gaze figure
        for scores in record["animators"].values():
            scores["gaze_r"] = gaze
    assert [record["key"] for record, _, _ in run_clips(prepared, run, gaze_only=True)] == ["hopper__clip01"]
    run["settings"]["size"] = 512  # prepared at 256 only
    assert [(clip, reason) for _, clip, reason in run_clips(prepared, run)] == [(None, "no 512 crops")] * 2
    run["clips"][0]["key"] = "someone__else"
    assert next(run_clips(prepared, run))[1:] == (None, f"not in the manifest of {prepared}")


def test_geometric_reproduces_its_own_animation(evaluated):
    aggregate, _ = evaluated
    geo, neural, static = aggregate["geometric"], aggregate["neural"], aggregate["static"]
    assert geo["psnr"] > 30.0
    assert geo["ssim"] > 0.9
    assert geo["faces_missed"] == 0
    assert geo["landmark_error"] < 5.0
    assert abs(geo["jitter"]) < 1.0
    # the untrained neural model is the geometric one by construction
    assert neural["psnr"] > 30.0 and neural["landmark_error"] < 5.0
    # both beat the do-nothing baseline
    assert geo["psnr"] > static["psnr"] and geo["landmark_error"] < static["landmark_error"]
    if geo["identity_distance"] is not None:
        assert geo["identity_distance"] < 0.6


def test_report_and_contact_sheet(evaluated):
    aggregate, out = evaluated
    report = (out / "report.md").read_text()
    assert format_table(aggregate, json.loads((out / "metrics.json").read_text())["labels"]) in report
    assert "| animator | PSNR (dB)" in report and "| geometric |" in report and "| neural (untrained lite) |" in report
    assert "crc32" in report
    sheet = cv2.imread(str(out / "contact_sheet.jpg"))
    assert sheet is not None
    # 2 clips × (ground truth, geometric, neural) rows, 6 evenly spaced frames of 8
    assert sheet.shape == (2 * 3 * 256, SHEET_COLUMNS * 256, 3)


def test_missing_folder(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        evaluate(tmp_path / "nope", tmp_path / "out", progress=False)


def test_folder_without_manifest(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(InputFileError, match="no manifest.json"):
        evaluate(tmp_path / "data", tmp_path / "out", progress=False)


def test_manifest_without_clips(tmp_path):
    _write_manifest(tmp_path, [])
    with pytest.raises(InputFileError, match="no clips"):
        evaluate(tmp_path, tmp_path / "out", progress=False)


def test_no_usable_clip_for_the_split(prepared, tmp_path):
    # one identity with one clip whose key does not hash into validation: the validation split is empty
    root = tmp_path / "one"
    shutil.copytree(prepared / "clips" / "hopper__clip01", root / "clips" / "hopper__clip01")
    manifest = json.loads((prepared / "manifest.json").read_text())
    _write_manifest(root, [c for c in manifest["clips"] if c["key"] == "hopper__clip01"])
    with pytest.raises(InputFileError, match="no usable clip for the 'val' split"):
        evaluate(root, tmp_path / "out", split="val", progress=False)
    # a listed clip that was never completely prepared
    (root / "clips" / "hopper__clip01" / "meta.json").unlink()
    with pytest.raises(InputFileError, match="not completely prepared"):
        evaluate(root, tmp_path / "out", split="all", progress=False)


def _chosen_clips(monkeypatch, tmp_path, entries: list[dict], split: str = "val") -> list[str]:
    """The clip keys evaluate() picks for ``split``, in the order it tries them (no clip files are read)."""
    tmp_path.mkdir(exist_ok=True)
    _write_manifest(tmp_path, [dict(e, frames=FRAMES) for e in entries])
    tried = []

    def load(data, entry, size=256):
        tried.append(entry["key"])
        return None, "not loaded in this test"

    monkeypatch.setattr(evaluate_module, "load_clip", load)
    with pytest.raises(InputFileError, match=f"no usable clip for the '{split}' split"):
        evaluate(tmp_path, tmp_path / "out", split=split, clips=1000, progress=False)
    return tried


def _hashes_into_val(name: str) -> bool:
    return zlib.crc32(name.encode()) % 1000 < 100


def test_val_clips_are_the_training_split(monkeypatch, tmp_path):
    """evaluate's validation clips are exactly split.split_clips(...)[1]: one split rule in the project."""
    names = [f"id{i:05d}" for i in range(200)]
    entries = [{"key": f"{n}__c{j}", "identity": n} for n in reversed(names) for j in range(2)]
    val = split_clips(entries, 0.1)[1]
    assert 10 < len(val) < 80 and {k.split("__")[0] for k in val} == {n for n in names if _hashes_into_val(n)}
    assert _chosen_clips(monkeypatch, tmp_path / "many", entries) == val
    # no identity hashes into validation: the last one in sorted order is the validation one
    train_only = [n for n in names if not _hashes_into_val(n)][:3]
    entries = [{"key": f"{n}__c{j}", "identity": n} for n in train_only for j in range(2)]
    chosen = _chosen_clips(monkeypatch, tmp_path / "none", entries)
    assert chosen == split_clips(entries, 0.1)[1] == [f"{max(train_only)}__c0", f"{max(train_only)}__c1"]
    # one identity: the rule applies to its clip keys
    entries = [{"key": f"solo__c{j}", "identity": "solo"} for j in range(30)]
    chosen = _chosen_clips(monkeypatch, tmp_path / "solo", entries)
    assert chosen == split_clips(entries, 0.1)[1] and 0 < len(chosen) < 30
    # split 'all': every clip, in key order
    assert _chosen_clips(monkeypatch, tmp_path / "solo", entries, split="all") == sorted(e["key"] for e in entries)


def test_train_split_is_one_clip_of_each_training_person(monkeypatch, tmp_path):
    """split 'train' (for choosing settings without the validation people): the first clip of every
    training person, none of a validation person."""
    names = [f"id{i:05d}" for i in range(60)]
    entries = [{"key": f"{n}__c{j}", "identity": n} for n in names for j in range(3)]
    train, val = split_clips(entries, 0.1)
    val_people = {k.split("__")[0] for k in val}
    assert val_people and len(val_people) < len(names)
    chosen = _chosen_clips(monkeypatch, tmp_path / "train", entries, split="train")
    assert chosen == [f"{n}__c0" for n in names if n not in val_people]


def test_cli_parser():
    parser = argparse.ArgumentParser()
    add_evaluate_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", "--data", "D", "--clips", "2", "--split", "all", "--no-progress"])
    assert (args.data, args.clips, args.frames, args.split, args.preset, args.weights, args.out) == \
        ("D", 2, 32, "all", "lite", None, None)
    assert args.no_progress
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "--data", "D", "--clips", "0"])


def test_run_evaluate_on_the_val_split(prepared, tmp_path, capsys):
    # neither 'astronaut' (crc32 % 1000 = 637) nor 'hopper' (670) hashes into validation,
    # so the last identity in sorted order, hopper, is the validation one
    parser = argparse.ArgumentParser()
    add_evaluate_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", "--data", str(prepared), "--clips", "4", "--frames", "3",
                              "--out", str(tmp_path / "ev"), "--no-progress"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_evaluate(args) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "| geometric |" in printed and "| neural (untrained lite) |" in printed
    assert str(tmp_path / "ev" / "report.md") in printed
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    entries = json.loads((prepared / "manifest.json").read_text())["clips"]
    assert [c["key"] for c in metrics["clips"]] == split_clips(entries, 0.1)[1] == ["hopper__clip01"]
    assert metrics["settings"]["split"] == "val"
    sheet = cv2.imread(str(tmp_path / "ev" / "contact_sheet.jpg"))
    assert sheet.shape == (3 * 256, 3 * 256, 3)  # 1 clip × 3 rows, all 3 driven frames


def test_cross_identity_keeps_the_source_and_follows_the_driver(prepared, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        aggregate = evaluate(prepared, tmp_path / "cross", split="all", clips=2, frames=8, progress=False,
                             cross=True)
    finally:
        torch.set_num_threads(threads)
    metrics = json.loads((tmp_path / "cross" / "metrics.json").read_text())
    pairs = {(c["key"], c["source_clip"]) for c in metrics["clips"]}
    assert pairs == {("astronaut__clip01", "hopper__clip01"), ("hopper__clip01", "astronaut__clip01")}
    geo, static = aggregate["geometric"], aggregate["static"]
    assert geo["psnr"] is None and geo["ssim"] is None  # no ground truth across people
    assert geo["faces_missed"] == 0 and geo["landmark_error"] < 5.0 < static["landmark_error"]
    # the driver's mouth stays closed in these frames: how well it is followed is not defined
    assert geo["mouth_r"] is None
    if geo["identity_distance"] is not None:  # the output is still the source person, not the driver
        assert geo["identity_distance"] < 0.45
    report = (tmp_path / "cross" / "report.md").read_text()
    assert "cross-identity reenactment" in report and "mouth follow" in report


def test_mouth_follow_is_the_correlation_of_mouth_openings():
    from avatar_app.train.eval_clips import _mouth_follow

    talking = [synthetic_landmarks(timeline_pose(5.0 + i / 10)).points for i in range(10)]  # the mouth moves
    rng = np.random.default_rng(0)
    noisy = [p + rng.normal(0, 0.3, p.shape) for p in talking]
    assert _mouth_follow(talking, noisy) > 0.95
    swapped = [noisy[i ^ 1] for i in range(10)]  # the same openings, each pair of frames swapped
    assert _mouth_follow(talking, swapped) < 0.0
    assert _mouth_follow(talking, [None] * 8 + noisy[8:]) is None  # too few re-detected faces
    closed = [synthetic_landmarks(timeline_pose(1.0 + i / 10)).points for i in range(10)]
    assert _mouth_follow(closed, closed) is None


def test_a_damaged_identity_embedding_skips_the_clip_and_says_why(prepared, tmp_path):
    from avatar_app.train.eval_clips import load_clip

    manifest = json.loads((prepared / "manifest.json").read_text())
    entry = next(c for c in manifest["clips"] if c["key"] == "hopper__clip01")
    shutil.copytree(prepared / "clips" / "hopper__clip01", tmp_path / "clips" / "hopper__clip01")
    identity = tmp_path / "clips" / "hopper__clip01" / "identity.npy"
    identity.unlink(missing_ok=True)
    clip, reason = load_clip(tmp_path, entry)  # no identity.npy: allowed
    assert clip is not None and clip.embedding is None and not reason
    for damaged in (b"\x93NUMPY garbage", None):
        if damaged is None:
            np.save(identity, np.ones(64, np.float32))  # a readable array of the wrong size
        else:
            identity.write_bytes(damaged)
        clip, reason = load_clip(tmp_path, entry)
        assert clip is None and "identity.npy is damaged" in reason and "prepare" in reason
