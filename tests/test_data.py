"""The training dataset on a small synthetic prepared dataset (3 portraits x 2 clips x 8 frames)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from avatar_app.errors import InputFileError
from avatar_app.face.mesh import topology
from avatar_app.train.data import PreparedDataset
from avatar_app.train.split import split_clips

from conftest import three_portrait_dataset


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return three_portrait_dataset(tmp_path_factory, frames=8, sizes=(256, 512))


def test_pairs_items(root):
    ds = PreparedDataset(root, split="all", samples_per_clip=4)
    assert len(ds) == 6 * 4 and len(ds.clips) == 6
    item = ds[5]
    assert set(item) >= {"source", "driving", "source_points", "driving_points", "identity", "clip"}
    for k in ("source", "driving"):
        assert item[k].shape == (3, 256, 256) and item[k].dtype == torch.float32
        assert 0.0 <= item[k].min() and item[k].max() <= 1.0
    for k in ("source_points", "driving_points"):
        assert item[k].shape == (478, 3) and item[k].dtype == torch.float32
        assert 0 < item[k][:, :2].min() and item[k][:, :2].max() < 255
    assert item["identity"].shape == (128,) and item["identity"].dtype == torch.float32
    assert item["identity"].abs().sum() > 0
    assert item["clip"].dtype == torch.int64 and int(item["clip"]) == 5 % 6
    s, d = item["frame_indices"].tolist()
    assert s != d
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_pairs_at_512(root):
    ds = PreparedDataset(root, size=512, split="all", samples_per_clip=1, augment=False)
    item = ds[0]
    assert item["source"].shape == (3, 512, 512)
    clip = ds.clips[0]
    s = int(item["frame_indices"][0])
    lm256 = np.load(root / "clips" / clip / "landmarks.npy")[s]
    np.testing.assert_allclose(item["source_points"][:, :2].numpy(), (lm256[:, :2] + 0.5) * 2 - 0.5, atol=1e-4)


def test_window_items(root):
    ds = PreparedDataset(root, mode="window", window=3, split="all", samples_per_clip=2, augment=False)
    assert len(ds) == 12
    item = ds[3]
    assert item["frames_512"].shape == (3, 3, 512, 512) and item["frames_512"].dtype == torch.float32
    assert item["frames_256"].shape == (3, 3, 256, 256)
    assert item["points_256"].shape == (3, 478, 3) and item["identity"].shape == (128,)
    idx = item["frame_indices"].tolist()
    assert idx == list(range(idx[0], idx[0] + 3))
    # the 256 crops are the 512 ones at half resolution
    down = torch.nn.functional.avg_pool2d(item["frames_512"], 2)
    assert (down - item["frames_256"]).abs().mean() < 0.02
    # and the window's points are the clip's landmarks of those frames
    lm = np.load(root / "clips" / ds.clips[int(item["clip"])] / "landmarks.npy")
    np.testing.assert_allclose(item["points_256"].numpy(), lm[idx])


def test_deterministic_and_epochs(root):
    a = PreparedDataset(root, split="all", samples_per_clip=4, seed=3)
    b = PreparedDataset(root, split="all", samples_per_clip=4, seed=3)
    for i in (0, 7, 23):
        x, y = a[i], b[i]
        assert all(torch.equal(x[k], y[k]) for k in x)
    before = [a[i]["frame_indices"].tolist() for i in range(12)]
    a.set_epoch(1)
    after = [a[i]["frame_indices"].tolist() for i in range(12)]
    assert before != after
    a.set_epoch(0)
    assert [a[i]["frame_indices"].tolist() for i in range(12)] == before


def test_split_by_identity(root):
    train = PreparedDataset(root, split="train")
    val = PreparedDataset(root, split="val")
    assert train.clips and val.clips
    assert not set(train.identities) & set(val.identities)
    assert sorted(train.clips + val.clips) == sorted(PreparedDataset(root, split="all").clips)
    assert train.val_clips() == val.clips and val.train_clips() == train.clips
    assert not val.augment


def test_split_with_one_identity():
    entries = [{"key": f"solo__c{i}", "identity": "solo"} for i in range(5)]
    train, val = split_clips(entries, 0.1)
    assert train and val and sorted(train + val) == sorted(e["key"] for e in entries)
    assert split_clips(entries, 0.0) == (sorted(e["key"] for e in entries), [])


def _mirror(points: np.ndarray, size: int) -> np.ndarray:
    out = points.copy()
    out[:, 0] = size - 1 - out[:, 0]
    return out[topology().mirror]


def test_flip_mirrors_landmarks(root, still_tracker):
    aug = PreparedDataset(root, split="all", samples_per_clip=4, seed=1, augment=True)
    plain = PreparedDataset(root, split="all", samples_per_clip=4, seed=1, augment=False)
    flipped = 0
    for i in range(len(aug)):
        x, y = aug[i], plain[i]
        assert torch.equal(x["frame_indices"], y["frame_indices"])
        if torch.equal(x["source_points"], y["source_points"]):
            continue  # not flipped this time
        flipped += 1
        for k in ("source", "driving"):
            np.testing.assert_allclose(x[f"{k}_points"].numpy(), _mirror(y[f"{k}_points"].numpy(), 256), atol=1e-4)
            # the image is the flipped one (up to the brightness/contrast jitter)
            a, b = x[k].flatten().numpy(), y[k].flip(-1).flatten().numpy()
            assert np.corrcoef(a, b)[0, 1] > 0.99
        if flipped == 1:  # mediapipe on the flipped image finds each point where the mirrored index says
            image = (x["source"].permute(1, 2, 0).numpy()[:, :, ::-1] * 255).round().astype(np.uint8)
            found = still_tracker.detect_faces(np.ascontiguousarray(image))
            assert found
            err = np.linalg.norm(found[0].xy - x["source_points"][:, :2].numpy(), axis=1).mean()
            assert err < 4.0, err
        if flipped >= 3:
            break
    assert flipped >= 1


def test_dataloader_with_workers(root):
    ds = PreparedDataset(root, split="all", samples_per_clip=2)
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=2, shuffle=True)))
    assert batch["source"].shape == (4, 3, 256, 256) and batch["driving_points"].shape == (4, 478, 3)
    assert batch["identity"].shape == (4, 128) and batch["clip"].shape == (4,)
    window = PreparedDataset(root, mode="window", window=2, split="all", samples_per_clip=1)
    batch = next(iter(DataLoader(window, batch_size=2, num_workers=2)))
    assert batch["frames_512"].shape == (2, 2, 3, 512, 512) and batch["points_256"].shape == (2, 2, 478, 3)


def test_clip_frames(root):
    ds = PreparedDataset(root, split="val")
    key = ds.val_clips()[0]
    frames = list(ds.clip_frames(key, 512))
    assert len(frames) == 8
    image, points = frames[0]
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8 and points.shape == (478, 3)
    assert ds.clip_valid(key).all()


def test_unusable_datasets(root, tmp_path):
    with pytest.raises(InputFileError, match="manifest.json"):
        PreparedDataset(tmp_path)
    with pytest.raises(InputFileError, match="does not exist"):
        PreparedDataset(tmp_path / "nowhere")
    manifest = json.loads((root / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputFileError, match="not an avatar-app dataset"):
        PreparedDataset(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(InputFileError, match="version"):
        PreparedDataset(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))  # clips listed but absent here
    with pytest.raises(InputFileError, match="missing"):
        PreparedDataset(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "sizes": [256], "clips": []}))
    with pytest.raises(InputFileError, match="512"):
        PreparedDataset(tmp_path, mode="window")


def test_clips_without_identity_are_named_in_a_warning(root, tmp_path, caplog):
    import shutil

    copy = tmp_path / "prepared"
    shutil.copytree(root, copy)
    with caplog.at_level("WARNING", logger="avatar_app.train.data"):
        PreparedDataset(copy, split="all")
    assert "identity.npy" not in caplog.text  # every clip has one
    gone = sorted(copy.glob("clips/*/identity.npy"))[:2]
    for path in gone:
        path.unlink()
    caplog.clear()
    with caplog.at_level("WARNING", logger="avatar_app.train.data"):
        ds = PreparedDataset(copy, split="all")
    assert "2 of 6 all clips" in caplog.text and "zero identity embedding" in caplog.text
    assert gone[0].parent.name in caplog.text
    assert sum(not c.has_embedding for c in ds.clip_records) == 2
