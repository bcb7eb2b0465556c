"""tools/identity_by_rotation.py: real frames against their clip's most frontal one, binned by head rotation."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_app.train.large_motion import rotation_angle
from conftest import load_tool, three_portrait_dataset


def _tool():
    return load_tool("identity_by_rotation")


def test_angle_of_a_rotation():
    a = np.radians(25.0)
    yaw = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    assert np.degrees(rotation_angle(np.stack([np.eye(3), yaw]))) == pytest.approx([0.0, 25.0], abs=1e-6)


def test_a_clip_against_its_most_frontal_frame(tmp_path_factory):
    pytest.importorskip("dlib")
    from avatar_app.models.identity import IdentityEncoder
    from avatar_app.train.large_motion import HeadPoses

    tool = _tool()
    clip = sorted((three_portrait_dataset(tmp_path_factory, frames=8) / "clips").iterdir())[0]
    rows = tool.clip_distances(clip, IdentityEncoder().load(), per_clip=8)
    poses = HeadPoses(np.load(clip / "landmarks.npy"), np.load(clip / "valid.npy"))
    ref = int(np.argmin(rotation_angle(poses.rotation)))
    assert ref not in [k for k, _, _ in rows] and len(rows) == 7  # every frame but the reference
    for k, turn, dist in rows:
        assert turn == pytest.approx(np.degrees(rotation_angle(poses.rotation[k] @ poses.rotation[ref].T)), abs=1e-6)
        assert 0.0 < dist < 0.6  # the same portrait, animated: one person by dlib's threshold
    assert max(t for _, t, _ in rows) > 2.0  # the synthetic clip turns the head
