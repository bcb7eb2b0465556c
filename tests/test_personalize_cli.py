"""`avatar-app personalize` and profiles end to end: save, list, use, and a cancelled run."""

from __future__ import annotations

import cv2
import pytest

from avatar_app.cli import main

pytest.importorskip("dlib", exc_type=ImportError)


@pytest.fixture()
def clip_video(tmp_path, astronaut_source):
    from test_meta import _animated_clip, write_clip_video

    return write_clip_video(_animated_clip(astronaut_source, n=24), tmp_path / "me.mp4")


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_personalize_saves_a_profile_that_render_uses(tmp_path, monkeypatch, capsys, clip_video):
    monkeypatch.setenv("AVATAR_APP_DATA", str(tmp_path / "data"))
    assert main(["personalize", "me", "--clip", str(clip_video), "--budget", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "profile 'me' saved" in out and "held-out PSNR" in out
    # without --weights it starts from the shipped real-trained weights of this machine's preset (CPU: lite)
    from avatar_app.models.shipped import default_preset, personalization_start
    from avatar_app.train.personalize import auto_plan
    from avatar_app.profiles import load_profile

    shipped, meta = personalization_start(default_preset(), plan=auto_plan("cpu"))  # the meta start where one ships
    assert load_profile("me").provenance["base_weights"] == str((meta or shipped).weights)
    assert main(["profiles", "list"]) == 0
    assert "me" in capsys.readouterr().out
    video = tmp_path / "p.mp4"
    assert main(["render", "--profile", "me", "--synthetic", "--duration", "0.4", "--fps", "10", "-o", str(video),
                 "--no-progress"]) == 0
    assert cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT) == 4


def _first_profile(tmp_path, monkeypatch, clip_video):
    """Personalize profile 'me' once (1 s); its folder."""
    monkeypatch.setenv("AVATAR_APP_DATA", str(tmp_path / "data"))
    assert main(["personalize", "me", "--clip", str(clip_video), "--budget", "1", "--no-progress"]) == 0
    return tmp_path / "data" / "profiles" / "me"


def test_cancelled_personalization_keeps_the_old_profile(tmp_path, monkeypatch, capsys, clip_video):
    import signal

    import avatar_app.train.personalize as mod

    folder = _first_profile(tmp_path, monkeypatch, clip_video)
    before = _files(folder)

    real = mod.personalize
    steps: list[int] = []

    def ctrl_c_at_step_2(*args, progress=None, **kwargs):
        """The real adaptation loop; a real SIGINT (what Ctrl-C sends) arrives after its second step."""
        def hook(info):
            progress(info)
            steps.append(info["step"])
            if info["step"] == 2:
                signal.raise_signal(signal.SIGINT)
        return real(*args, progress=hook, **kwargs)

    monkeypatch.setattr(mod, "personalize", ctrl_c_at_step_2)
    assert main(["personalize", "me", "--clip", str(clip_video), "--budget", "30", "--no-progress"]) == 130
    assert steps == [1, 2]  # stopped inside the loop: no third step
    assert "nothing was saved" in capsys.readouterr().err
    assert _files(folder) == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["me"]  # no work folders left behind


def test_ctrl_c_while_the_profile_is_swapped_in_keeps_the_old_one(tmp_path, monkeypatch, capsys, clip_video):
    import os
    from pathlib import Path

    import avatar_app.profiles as profiles

    folder = _first_profile(tmp_path, monkeypatch, clip_video)
    before = _files(folder)
    real_rename = os.rename

    def rename(src, dst):  # Ctrl-C after 'old -> trash', before 'new -> me'
        if Path(dst) == folder and ".tmp-" in Path(src).name:
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(profiles.os, "rename", rename)
    assert main(["personalize", "me", "--clip", str(clip_video), "--budget", "1", "--no-progress"]) == 130
    monkeypatch.setattr(profiles.os, "rename", real_rename)
    capsys.readouterr()
    assert _files(folder) == before
    assert main(["profiles", "list"]) == 0
    assert "me" in capsys.readouterr().out


def test_profile_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AVATAR_APP_DATA", str(tmp_path / "data"))
    assert main(["render", "--profile", "nobody", "--synthetic", "-o", str(tmp_path / "o.mp4")]) == 3
    assert "nobody" in capsys.readouterr().err
    assert main(["render", "--synthetic", "-o", str(tmp_path / "o.mp4")]) == 2
    assert "--source" in capsys.readouterr().err


def test_personalize_from_a_recording(tmp_path, monkeypatch, capsys, clip_video):
    """--record reads the camera for N seconds (here a video file stands in for the camera device)."""
    monkeypatch.setenv("AVATAR_APP_DATA", str(tmp_path / "data"))
    assert main(["personalize", "rec", "--record", "2", "--camera", str(clip_video), "--budget", "1",
                 "--no-progress"]) == 0
    assert "profile 'rec' saved" in capsys.readouterr().out
