"""Profiles: atomic save, load with clear errors, list/show/delete and the `profiles` CLI."""

from __future__ import annotations

import argparse
import copy
import io
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from avatar_app import profile_commands
from avatar_app import profiles as prof
from avatar_app.errors import AvatarError, InputFileError, OutputError
from avatar_app.models import portrait
from avatar_app.models.portrait import PortraitModel
from avatar_app.types import NUM_LANDMARKS, Landmarks

TINY = {"preset": "custom", "warp": {"channels": 4, "levels": 2, "code_dim": 8, "resolution": 64},
        "generator": {"channels": [4, 8, 8], "top_channels": 4, "top_block": False, "hidden": 4},
        "enhancer": {"channels": 4, "blocks": 1, "neighbours": 2}}


@pytest.fixture(scope="module")
def model() -> PortraitModel:
    torch.manual_seed(0)
    return PortraitModel(config=copy.deepcopy(TINY))


@pytest.fixture(scope="module")
def model2(model) -> PortraitModel:
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.25)
    return other


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(48, 40, 3), dtype=np.uint8)  # noise: any lossy step would show


@pytest.fixture
def neutral() -> Landmarks:
    rng = np.random.default_rng(2)
    pts = (rng.random((NUM_LANDMARKS, 3)) * [640, 480, 50]).astype(np.float32)
    return Landmarks(pts, (640, 480), 0.875)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hidden(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def same_weights(a: PortraitModel, b: PortraitModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------- root and names


def test_profiles_root_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("AVATAR_APP_DATA", str(tmp_path / "data"))
    assert prof.profiles_root() == tmp_path / "data" / "profiles"
    monkeypatch.delenv("AVATAR_APP_DATA")
    import platformdirs

    assert prof.profiles_root() == Path(platformdirs.user_data_dir("avatar-app")) / "profiles"


@pytest.mark.parametrize("name", ["me", "Anna B", "work-cam_2.1", "x" * 64, "A.b"])
def test_good_names(name):
    assert prof.validate_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 65, ".hidden", "..", "a/b", "a\\b", "Ünïcode", "tab\there",
                                  " lead", "trail ", "semi;colon", "new\nline"])
def test_bad_names_rejected(name, model, image, tmp_path):
    with pytest.raises(InputFileError, match="Profile names may only use"):
        prof.save_profile(name, model, image, root=tmp_path)
    with pytest.raises(InputFileError, match="Profile names may only use"):
        prof.load_profile(name, root=tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------- save / load


def test_round_trip(model, image, neutral, tmp_path):
    metrics = {"psnr_before": np.float32(24.5), "psnr_after": 27.25, "steps": np.int64(300)}
    provenance = {"base_weights": "lite-meta.safetensors", "budget_s": 30, "steps": 300,
                  "clip": Path("/videos/me.mp4"), "lr": [1e-4, 0.5]}
    saved = prof.save_profile("me", model, image, neutral=neutral, metrics=metrics, provenance=provenance,
                              root=tmp_path)
    loaded = prof.load_profile("me", root=tmp_path)
    assert loaded.path == saved.path == tmp_path / "me"
    assert sorted(p.name for p in loaded.path.iterdir()) == ["neutral.npy", "profile.json", "source.png",
                                                             "weights.safetensors"]
    assert loaded.weights_path.name == "weights.safetensors" and loaded.source_path.name == "source.png"
    assert loaded.created == saved.created and loaded.created.endswith("+00:00")
    assert same_weights(prof.load_weights(loaded), model)
    assert np.array_equal(prof.load_source(loaded), image)
    assert np.array_equal(loaded.neutral.points, neutral.points)
    assert loaded.neutral.points.dtype == np.float32
    assert loaded.neutral.image_size == (640, 480) and loaded.neutral.confidence == 0.875
    expected_metrics = {"psnr_before": 24.5, "psnr_after": 27.25, "steps": 300}
    expected_prov = {**provenance, "clip": "/videos/me.mp4"}
    assert loaded.metrics == saved.metrics == expected_metrics
    assert loaded.provenance == saved.provenance == expected_prov
    info = json.loads((loaded.path / "profile.json").read_text())
    assert info["format"] == "avatar-app-profile" and info["version"] == 1 and info["name"] == "me"
    assert info["source"]["size"] == [40, 48]
    assert hidden(tmp_path) == []


def test_round_trip_via_env_without_neutral(model, image, monkeypatch, tmp_path):
    monkeypatch.setenv("AVATAR_APP_DATA", str(tmp_path))
    prof.save_profile("plain", model, image[:, :, 0])  # grey is stored as BGR
    p = prof.load_profile("plain")
    assert p.path == tmp_path / "profiles" / "plain"
    assert p.neutral is None and p.metrics == {} and p.provenance == {}
    assert np.array_equal(prof.load_source(p), cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR))
    assert [q.name for q in prof.list_profiles()] == ["plain"]


def test_overwrite_replaces(model, model2, image, neutral, tmp_path):
    prof.save_profile("me", model, image, neutral=neutral, metrics={"psnr": 1.0}, root=tmp_path)
    new_image = 255 - image
    prof.save_profile("me", model2, new_image, metrics={"psnr": 2.0}, root=tmp_path)
    p = prof.load_profile("me", root=tmp_path)
    assert same_weights(prof.load_weights(p), model2)
    assert np.array_equal(prof.load_source(p), new_image)
    assert p.neutral is None and not (p.path / "neutral.npy").exists()  # nothing of the old one survives
    assert p.metrics == {"psnr": 2.0}
    assert hidden(tmp_path) == []


class Boom(RuntimeError):
    pass


def _fail_checkpoint(exc):
    def save_checkpoint(model, path, metadata=None):
        Path(path).write_bytes(b"half a file")
        raise exc
    return save_checkpoint


@pytest.mark.parametrize("failure", ["checkpoint_oserror", "checkpoint_other", "png", "json_write"])
def test_failed_save_keeps_previous_profile(failure, model, model2, image, neutral, tmp_path, monkeypatch):
    prof.save_profile("me", model, image, neutral=neutral, metrics={"psnr": 1.0}, root=tmp_path)
    before = snapshot(tmp_path / "me")
    if failure == "checkpoint_oserror":
        monkeypatch.setattr(portrait, "save_checkpoint", _fail_checkpoint(OSError(28, "No space left on device")))
        expect = OutputError
    elif failure == "checkpoint_other":
        monkeypatch.setattr(portrait, "save_checkpoint", _fail_checkpoint(Boom("bug")))
        expect = Boom
    elif failure == "png":
        monkeypatch.setattr(cv2, "imencode", lambda *a, **k: (False, None))
        expect = OutputError
    else:
        real = prof.write_synced  # (avatar_app.folder_swap's, as profiles calls it)

        def write_synced(path, data):
            if path.name == "profile.json":
                raise OSError(28, "No space left on device")
            real(path, data)
        monkeypatch.setattr(prof, "write_synced", write_synced)
        expect = OutputError
    with pytest.raises(expect) as info:
        prof.save_profile("me", model2, 255 - image, metrics={"psnr": 2.0}, root=tmp_path)
    if expect is OutputError:
        assert "previous profile is unchanged" in str(info.value)
    assert snapshot(tmp_path / "me") == before
    assert hidden(tmp_path) == []
    assert same_weights(prof.load_weights(prof.load_profile("me", root=tmp_path)), model)


def test_failed_first_save_leaves_nothing(model, image, tmp_path, monkeypatch):
    monkeypatch.setattr(portrait, "save_checkpoint", _fail_checkpoint(OSError(5, "I/O error")))
    with pytest.raises(OutputError, match="Could not save profile 'new'"):
        prof.save_profile("new", model, image, root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failed_swap_restores_previous(model, model2, image, tmp_path, monkeypatch):
    prof.save_profile("me", model, image, root=tmp_path)
    before = snapshot(tmp_path / "me")
    real_rename = prof.os.rename

    def rename(src, dst):
        if Path(dst) == tmp_path / "me" and ".tmp-" in Path(src).name:
            raise OSError(13, "Permission denied")
        real_rename(src, dst)
    monkeypatch.setattr(prof.os, "rename", rename)
    with pytest.raises(OutputError, match="Could not put profile 'me' into place"):
        prof.save_profile("me", model2, image, root=tmp_path)
    assert snapshot(tmp_path / "me") == before
    assert hidden(tmp_path) == []


def test_interrupted_swap_is_recovered(model, image, tmp_path):
    """A crash between 'old -> trash' and 'new -> name' must not lose the old profile."""
    prof.save_profile("me", model, image, root=tmp_path)
    before = snapshot(tmp_path / "me")
    (tmp_path / "me").rename(tmp_path / ".me.trash-dead")
    assert prof.load_profile("me", root=tmp_path).name == "me"
    assert snapshot(tmp_path / "me") == before and hidden(tmp_path) == []


def test_ctrl_c_between_the_two_renames_keeps_the_old_profile(model, model2, image, tmp_path, monkeypatch):
    prof.save_profile("me", model, image, root=tmp_path)
    before = snapshot(tmp_path / "me")
    real_rename = prof.os.rename

    def rename(src, dst):  # the old profile is already in its trash folder when Ctrl-C arrives
        if Path(dst) == tmp_path / "me" and ".tmp-" in Path(src).name:
            raise KeyboardInterrupt
        real_rename(src, dst)
    monkeypatch.setattr(prof.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        prof.save_profile("me", model2, image, root=tmp_path)
    monkeypatch.undo()
    assert snapshot(tmp_path / "me") == before and hidden(tmp_path) == []
    assert [p.name for p in prof.list_profiles(tmp_path)] == ["me"]


def test_list_restores_a_profile_left_in_its_trash_folder(saved, tmp_path, caplog):
    """A save killed (no chance to clean up) between 'old -> trash' and 'new -> name'."""
    before = snapshot(saved)
    saved.rename(tmp_path / ".me.trash-0a1b2c3d")
    with caplog.at_level(logging.WARNING, logger="avatar_app.profiles"):
        assert [p.name for p in prof.list_profiles(tmp_path)] == ["me", "other"]
    assert "restoring profile 'me'" in caplog.text
    assert snapshot(saved) == before and hidden(tmp_path) == []


# ---------------------------------------------------------------------------- load errors


@pytest.fixture
def saved(model, image, neutral, tmp_path) -> Path:
    prof.save_profile("me", model, image, neutral=neutral, root=tmp_path)
    prof.save_profile("other", model, image, root=tmp_path)
    return tmp_path / "me"


def _edit_info(folder: Path, **changes) -> None:
    info = json.loads((folder / "profile.json").read_text())
    info.update(changes)
    (folder / "profile.json").write_text(json.dumps(info))


def test_unknown_profile_lists_existing(saved, tmp_path):
    with pytest.raises(InputFileError, match=r"no profile named 'nope'.*existing profiles are: me, other\."):
        prof.load_profile("nope", root=tmp_path)
    with pytest.raises(InputFileError, match="there are no profiles yet"):
        prof.load_profile("nope", root=tmp_path / "empty")


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "profile.json").unlink(), "has no profile.json"),
    (lambda f: (f / "profile.json").write_text("{not json"), "damaged profile.json"),
    (lambda f: (f / "profile.json").write_bytes(b"\xff\xfe\x00"), "damaged profile.json"),
    (lambda f: _edit_info(f, format="something-else"), "is not an avatar-app profile file"),
    (lambda f: (f / "profile.json").write_text("[1, 2]"), "is not an avatar-app profile file"),
    (lambda f: _edit_info(f, version=2), r"format version 2, newer .*; update avatar-app\."),
    (lambda f: _edit_info(f, version="1"), "damaged profile.json"),
    (lambda f: _edit_info(f, metrics=[1]), "bad metrics"),
    (lambda f: (f / "weights.safetensors").unlink(), "missing its weights file"),
    (lambda f: (f / "source.png").unlink(), "missing its source image"),
    (lambda f: (f / "neutral.npy").unlink(), "missing its neutral face file"),
    (lambda f: (f / "neutral.npy").write_bytes(b"garbage"), "damaged neutral face file"),
])
def test_load_errors(saved, tmp_path, damage, message):
    damage(saved)
    with pytest.raises(InputFileError, match=message) as info:
        prof.load_profile("me", root=tmp_path)
    text = str(info.value)
    assert "newer" in text or "avatar-app profiles delete me" in text  # says what to do
    assert text.count(". ") == 0  # one sentence


def test_load_weights_damaged_names_file(saved, tmp_path):
    (saved / "weights.safetensors").write_bytes(b"\x00" * 64)
    p = prof.load_profile("me", root=tmp_path)
    with pytest.raises(InputFileError, match="weights.safetensors"):
        prof.load_weights(p)


def test_list_skips_broken_and_work_folders(saved, tmp_path, caplog):
    (tmp_path / ".me.tmp-1234").mkdir()
    (tmp_path / "stray.txt").write_text("x")
    (tmp_path / "other" / "source.png").unlink()
    with caplog.at_level(logging.WARNING, logger="avatar_app.profiles"):
        assert [p.name for p in prof.list_profiles(tmp_path)] == ["me"]
    assert "skipping broken profile 'other'" in caplog.text
    assert prof.list_profiles(tmp_path / "missing") == []


def test_delete(saved, tmp_path):
    prof.delete_profile("other", root=tmp_path)
    assert not (tmp_path / "other").exists() and hidden(tmp_path) == []
    with pytest.raises(InputFileError, match=r"no profile named 'other'.*existing profiles are: me\."):
        prof.delete_profile("other", root=tmp_path)


# ---------------------------------------------------------------------------- CLI


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="avatar-app")
    sub = parser.add_subparsers(dest="command")
    profile_commands.add_profiles_parser(sub)
    return parser.parse_args(["profiles", *argv])


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_metric_summary():
    assert profile_commands.metric_summary({"psnr_before": 24.123, "psnr_after": 27.0, "lpips": {"before": 0.3, "after": 0.2},
                                "steps": 300, "x_before": 1}) == "psnr 24.12→27.00, lpips 0.30→0.20"
    assert profile_commands.metric_summary({}) == ""


def test_cli_list_show_delete(model, image, neutral, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("AVATAR_APP_DATA", str(tmp_path))
    assert profile_commands.run_profiles(parse("list")) == 0
    assert "no profiles yet" in capsys.readouterr().out

    prof.save_profile("me", model, image, neutral=neutral, metrics={"psnr_before": 24.5, "psnr_after": 27.25})
    prof.save_profile("bob", model, image)
    assert profile_commands.run_profiles(parse("list")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == ["bob", "me"]
    assert lines[1].endswith("psnr 24.50→27.25")

    assert profile_commands.run_profiles(parse("show", "me")) == 0
    out = capsys.readouterr().out
    assert '"format": "avatar-app-profile"' in out and '"psnr_after": 27.25' in out
    root = tmp_path / "profiles"
    for path in (root / "me" / "weights.safetensors", root / "me" / "source.png", root / "me" / "neutral.npy"):
        assert str(path) in out
    with pytest.raises(InputFileError, match="no profile named 'zed'"):
        profile_commands.run_profiles(parse("show", "zed"))

    # delete without a terminal and without --yes: refused, with the fix in the message
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(AvatarError, match="add --yes") as info:
        profile_commands.run_profiles(parse("delete", "bob"))
    assert info.value.exit_code != 0 and (root / "bob").is_dir()

    # on a terminal: "n" keeps it, "y" deletes it
    monkeypatch.setattr("sys.stdin", FakeTTY("n\n"))
    assert profile_commands.run_profiles(parse("delete", "bob")) == 1
    assert (root / "bob").is_dir() and "not deleted" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", FakeTTY("y\n"))
    assert profile_commands.run_profiles(parse("delete", "bob")) == 0
    assert not (root / "bob").exists()

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert profile_commands.run_profiles(parse("delete", "me", "--yes")) == 0
    assert "deleted profile 'me'" in capsys.readouterr().out
    assert prof.list_profiles() == []
    with pytest.raises(InputFileError, match="there are no profiles yet"):
        profile_commands.run_profiles(parse("delete", "me", "--yes"))


def test_cli_requires_an_action():
    with pytest.raises(SystemExit):
        parse()
