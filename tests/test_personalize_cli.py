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
    assert main(["profiles", "list"]) == 0
    assert "me" in capsys.readouterr().out
    video = tmp_path / "p.mp4"
    assert main(["render", "--profile", "me", "--synthetic", "--duration", "0.4", "--fps", "10", "-o", str(video),
                 "--no-progress"]) == 0
    assert cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT) == 4


def test_cancelled_personalization_keeps_the_old_profile(tmp_path, monkeypatch, capsys, clip_video):
    monkeypatch.setenv("AVATAR_APP_DATA", str(tmp_path / "data"))
    assert main(["personalize", "me", "--clip", str(clip_video), "--budget", "1", "--no-progress"]) == 0
    folder = tmp_path / "data" / "profiles" / "me"
    before = _files(folder)

    import avatar_app.train.personalize as mod

    def interrupted(*args, progress=None, **kwargs):
        progress({"step": 1, "elapsed": 0.5, "eta": 0.5, "loss": 0.1})
        raise KeyboardInterrupt  # the user pressed Ctrl-C mid-way

    monkeypatch.setattr(mod, "personalize", interrupted)
    assert main(["personalize", "me", "--clip", str(clip_video), "--budget", "5", "--no-progress"]) == 130
    assert "nothing was saved" in capsys.readouterr().err
    assert _files(folder) == before


def test_profile_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AVATAR_APP_DATA", str(tmp_path / "data"))
    assert main(["render", "--profile", "nobody", "--synthetic", "-o", str(tmp_path / "o.mp4")]) == 3
    assert "nobody" in capsys.readouterr().err
    assert main(["render", "--synthetic", "-o", str(tmp_path / "o.mp4")]) == 1
    assert "--source" in capsys.readouterr().err


def test_personalize_from_a_recording(tmp_path, monkeypatch, capsys, clip_video):
    """--record reads the camera for N seconds (here a video file stands in for the camera device)."""
    monkeypatch.setenv("AVATAR_APP_DATA", str(tmp_path / "data"))
    assert main(["personalize", "rec", "--record", "2", "--camera", str(clip_video), "--budget", "1",
                 "--no-progress"]) == 0
    assert "profile 'rec' saved" in capsys.readouterr().out
