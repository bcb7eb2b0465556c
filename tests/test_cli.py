"""The command line as a user runs it: outputs, and one clear sentence for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar_app.cli import main
from avatar_app.runtime.bench import camera_frame


def _read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} is not a playable video"
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        out.write(f)
    out.release()
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("avatar-app: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_render_synthetic_writes_a_playable_video(tmp_path, astronaut_path):
    out = tmp_path / "out.mp4"
    code = main(["render", "--source", str(astronaut_path), "--synthetic", "--duration", "1.2", "--fps", "10",
                 "-o", str(out), "--no-progress"])
    assert code == 0
    frames = _read_video(out)
    assert len(frames) == 12
    assert frames[0].shape == (256, 256, 3)
    assert np.std(frames[0]) > 20  # a real picture, not a blank frame


def test_the_animator_is_chosen_for_the_machine_and_says_why(monkeypatch, capsys, astronaut_source):
    """--animator auto (the default): geometric without a GPU, neural with the full model where one runs it,
    and neural whenever --weights names a model; the note says which and why."""
    import argparse

    from avatar_app import animate_commands
    from avatar_app.inference import default_animator
    from avatar_app.models.shipped import shipped_weights

    args = argparse.Namespace(animator="auto", weights=None, preset=None, backend="auto", precision=None,
                              calibration=None)
    monkeypatch.setattr(default_animator, "machine_default", lambda *a, **k: default_animator.MachineDefault("geometric", "lite", "WHY-GEO"))
    assert animate_commands.make_animator(args, astronaut_source) is None and args.animator == "geometric"
    assert "WHY-GEO" in capsys.readouterr().err
    built = []

    def neural(source, model, **kw):  # the model it would run; building the networks is tested elsewhere
        built.append(model.preset)
        raise RuntimeError("stop here")

    monkeypatch.setattr("avatar_app.runtime.neural_animator.NeuralAnimator", neural)
    monkeypatch.setattr(default_animator, "machine_default", lambda *a, **k: default_animator.MachineDefault("neural", "full", "WHY-GPU"))
    args.animator, args.preset = "auto", None
    with pytest.raises(RuntimeError, match="stop here"):
        animate_commands.make_animator(args, astronaut_source)
    assert built == ["full"] and args.animator == "neural" and "WHY-GPU" in capsys.readouterr().err

    def no_default(*args, **kwargs):
        raise AssertionError("--weights chose the animator already")

    monkeypatch.setattr(default_animator, "machine_default", no_default)
    args.animator, args.preset, args.weights = "auto", None, str(shipped_weights("lite"))
    with pytest.raises(RuntimeError, match="stop here"):
        animate_commands.make_animator(args, astronaut_source)
    assert built == ["full", "lite"] and args.animator == "neural"


def test_render_from_a_driving_video_with_paste_back(tmp_path, astronaut_path, astronaut, astronaut_source, hopper):
    drive = camera_frame(hopper)
    driving = _write_video(tmp_path / "drive.mp4", [drive] * 6)
    out, crop_only = tmp_path / "pasted.mp4", tmp_path / "crop.mp4"
    args = ["render", "--source", str(astronaut_path), "--driving", str(driving), "--no-progress"]
    assert main(args + ["--paste-back", "-o", str(out)]) == 0
    assert main(args + ["-o", str(crop_only)]) == 0
    frames, crops = _read_video(out), _read_video(crop_only)
    assert len(frames) == 6 == len(crops)
    assert frames[0].shape == astronaut.shape == (512, 512, 3)  # the whole astronaut portrait
    # where the crop lies in the portrait (crop px from its nearest edge; negative outside)
    size = astronaut_source.size
    inv = cv2.invertAffineTransform(astronaut_source.crop_to_image)
    ys, xs = np.mgrid[0:512, 0:512].astype(np.float64)
    cx, cy = (inv[i, 0] * xs + inv[i, 1] * ys + inv[i, 2] for i in range(2))
    edge = np.minimum.reduce([cx, cy, size - cx, size - cy])
    pasted = frames[-1].astype(np.float64)
    background = np.abs(pasted - astronaut).mean(axis=2)[edge < -2]
    # the codec's own error on the untouched portrait
    floor = _read_video(_write_video(tmp_path / "still.mp4", [astronaut] * 6))[-1].astype(np.float64)
    codec = np.abs(floor - astronaut).mean(axis=2)[edge < -2]
    assert background.size > 10_000 and background.mean() < codec.mean() + 0.5  # untouched but for the codec
    # inside the soft edge, the portrait holds the avatar that a render without --paste-back makes
    back = cv2.warpAffine(frames[-1], inv, (size, size), flags=cv2.INTER_LINEAR)
    inner = slice(int(0.15 * size), int(0.85 * size))
    assert np.abs(back[inner, inner].astype(np.float64) - crops[-1][inner, inner]).mean() < 4.0


def test_console_script_renders(tmp_path, astronaut_path):
    """The installed entry point, as README tells a user to run it."""
    out = tmp_path / "cli.mp4"
    env = dict(os.environ)
    res = subprocess.run(
        [sys.executable, "-m", "avatar_app", "render", "--source", str(astronaut_path), "--synthetic",
         "--duration", "0.4", "--fps", "10", "-o", str(out)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert res.returncode == 0, res.stderr
    assert "wrote" in res.stdout and len(_read_video(out)) == 4


def test_missing_source_file(tmp_path, capsys):
    code = main(["render", "--source", str(tmp_path / "nope.jpg"), "--synthetic", "-o", str(tmp_path / "o.mp4")])
    assert code == 3
    assert "nope.jpg" in _error_line(capsys)


def test_unreadable_source_file(tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    code = main(["render", "--source", str(bad), "--synthetic", "-o", str(tmp_path / "o.mp4")])
    assert code == 3
    assert "notes.png" in _error_line(capsys)


def test_source_without_a_face(tmp_path, capsys):
    blank = tmp_path / "wall.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(blank), cv2.GaussianBlur(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8), (0, 0), 8))
    code = main(["render", "--source", str(blank), "--synthetic", "-o", str(tmp_path / "o.mp4")])
    assert code == 4
    assert "No face" in _error_line(capsys)


def test_driving_video_without_a_face_writes_nothing(tmp_path, capsys, astronaut_path):
    rng = np.random.default_rng(1)
    frames = [np.full((240, 320, 3), 90, np.uint8) + rng.integers(0, 20, (240, 320, 3), dtype=np.uint8) for _ in range(5)]
    driving = _write_video(tmp_path / "empty_room.mp4", frames)
    out = tmp_path / "o.mp4"
    code = main(["render", "--source", str(astronaut_path), "--driving", str(driving), "-o", str(out), "--no-progress"])
    assert code == 4
    assert "empty_room.mp4" in _error_line(capsys)
    assert list(tmp_path.glob("*o.*mp4")) == []  # neither the output nor a partial file


def test_failed_render_keeps_an_earlier_output(tmp_path, capsys, astronaut_path):
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"earlier good video")
    rng = np.random.default_rng(2)
    driving = _write_video(tmp_path / "noface.mp4", [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)] * 3)
    assert main(["render", "--source", str(astronaut_path), "--driving", str(driving), "-o", str(out),
                 "--no-progress"]) == 4
    assert out.read_bytes() == b"earlier good video"


def test_corrupt_driving_video(tmp_path, capsys, astronaut_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 100)
    code = main(["render", "--source", str(astronaut_path), "--driving", str(bad), "-o", str(tmp_path / "o.mp4")])
    assert code == 3
    assert "broken.mp4" in _error_line(capsys)


def test_render_from_a_camera_records_the_seconds_asked(tmp_path, astronaut_path, hopper):
    """README: `--camera` records `--duration` seconds (index or device path); a video file stands in for the
    device, as a camera longer than asked."""
    camera = _write_video(tmp_path / "camera.mp4", [camera_frame(hopper)] * 30)  # 3 s at 10 fps
    out = tmp_path / "recorded.mp4"
    assert main(["render", "--source", str(astronaut_path), "--camera", str(camera), "--duration", "1", "--fps", "10",
                 "-o", str(out), "--no-progress"]) == 0
    assert len(_read_video(out)) == 10


def test_camera_that_does_not_open(tmp_path, capsys, astronaut_path):
    code = main(["render", "--source", str(astronaut_path), "--camera", "/dev/video-missing-77",
                 "-o", str(tmp_path / "o.mp4")])
    assert code == 5
    assert "camera" in _error_line(capsys).lower()


def test_face_index_out_of_range(tmp_path, capsys, astronaut_path):
    code = main(["render", "--source", str(astronaut_path), "--face", "3", "--synthetic", "-o", str(tmp_path / "o.mp4")])
    assert code == 4
    assert "1 face" in _error_line(capsys)


def test_debug_shows_the_traceback(tmp_path, capsys):
    code = main(["--debug", "render", "--source", str(tmp_path / "x.jpg"), "--synthetic", "-o", str(tmp_path / "o.mp4")])
    assert code == 3
    assert "Traceback" in capsys.readouterr().err


def test_doctor_reports_tracker_and_backends(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for needle in ("packages:", "mediapipe", "face mesh model", "backends:", "torch-cpu", "torch-cuda", "cameras:"):
        assert needle in out
    assert "[ok] face mesh model" in out  # mediapipe 0.10.21 bundles its model
    from avatar_app.inference.default_animator import machine_default

    assert f"--animator auto: {machine_default().animator}" in out  # what auto runs here, and why


def test_doctor_says_when_mediapipe_ships_no_face_model(monkeypatch, tmp_path):
    """README: later mediapipe versions ship no FaceMesh model; doctor says so and what to install (a mediapipe
    folder without the model stands in for such a version)."""
    import importlib.machinery
    import importlib.util

    from avatar_app import doctor

    empty = tmp_path / "mediapipe"
    empty.mkdir()
    spec = importlib.machinery.ModuleSpec("mediapipe", None, is_package=True)
    spec.submodule_search_locations = [str(empty)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "mediapipe" else None)
    check = doctor.tracker_check()
    assert not check.ok and "install mediapipe==0.10.21" in check.detail
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert not doctor.tracker_check().ok and "not installed" in doctor.tracker_check().detail


def test_bench_prints_stage_times(capsys):
    assert main(["bench", "--size", "256", "--frames", "3"]) == 0
    out = capsys.readouterr().out
    for stage in ("track", "retarget", "rasterize", "flow", "warp", "total", "fps"):
        assert stage in out


def test_help_lists_the_commands(capsys):
    # (no command opens the desktop app: see test_gui.test_no_command_opens_the_desktop_app)
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "render" in out and "gui" in out


def test_bad_size_is_a_usage_error(tmp_path, astronaut_path):
    with pytest.raises(SystemExit) as exc:
        main(["render", "--source", str(astronaut_path), "--synthetic", "--size", "300", "-o", str(tmp_path / "o.mp4")])
    assert exc.value.code == 2


@pytest.mark.parametrize("flags", [["--weights", "w.safetensors", "--profile", "me"],  # two sources of weights
                                   ["--weights", "w.safetensors", "--animator", "geometric"],
                                   ["--animator", "neural", "--backend", "onnxruntime", "--precision", "int8"]])
def test_flags_the_command_cannot_take_exit_as_argparse_s_own(tmp_path, capsys, astronaut_path, flags):
    """README: exit code 2 for bad arguments, whether argparse or the command finds them (they were 1)."""
    code = main(["render", "--source", str(astronaut_path), "--synthetic", "-o", str(tmp_path / "o.mp4")] + flags)
    assert code == 2 and "--" in _error_line(capsys)
    assert not (tmp_path / "o.mp4").exists()


def test_ctrl_c_in_the_middle_of_a_render_keeps_the_earlier_output(tmp_path, capsys, astronaut_path, monkeypatch):
    """README: 130 when interrupted, and a render that does not finish never leaves a broken file or overwrites a
    good one (the frames so far are in a hidden partial file, which goes)."""
    from avatar_app.runtime.animator import GeometricAnimator

    out = tmp_path / "keep.mp4"
    out.write_bytes(b"earlier good video")
    animate, calls = GeometricAnimator.animate, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return animate(self, *args, **kwargs)

    monkeypatch.setattr(GeometricAnimator, "animate", interrupted)
    assert main(["render", "--source", str(astronaut_path), "--synthetic", "--duration", "2", "-o", str(out),
                 "--no-progress"]) == 130
    assert len(calls) == 6 and out.read_bytes() == b"earlier good video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]  # no partial file left behind


def test_frames_without_a_face_hold_the_last_pose(tmp_path, astronaut_path, hopper):
    still = camera_frame(hopper)
    moved = np.roll(still, 40, axis=1)  # the driver's head moved right
    blank = np.full_like(still, 40)
    # (mediapipe's tracking may lose a face that jumps, and re-detects it on the next frame)
    driving = _write_video(tmp_path / "gaps.mp4", [still, moved, moved, moved, blank, blank])
    out = tmp_path / "held.mp4"
    assert main(["render", "--source", str(astronaut_path), "--driving", str(driving), "-o", str(out),
                 "--no-progress"]) == 0
    f = [x.astype(float) for x in _read_video(out)]
    assert len(f) == 6
    moved_away = np.abs(f[3] - f[0]).mean()
    assert moved_away > 3.0  # the avatar followed the move
    for held in f[4:]:
        assert np.abs(held - f[3]).mean() < 0.2 * moved_away  # and stayed there while no face was seen


def test_bench_live_reports_throughput_and_latency(capsys):
    assert main(["bench", "--live", "--size", "256", "--seconds", "1"]) == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith(("geometric synthetic 256", "geometric tracked 256"))]
    assert len(rows) == 2
    for row in rows:
        in_fps, out_fps, p50, p95 = (float(v) for v in row.split()[3:7])
        assert in_fps > 10 and out_fps > 5 and 0 < p50 <= p95


def test_bench_live_times_the_neural_animator_too(capsys):
    assert main(["bench", "--live", "--size", "256", "--seconds", "1", "--kind", "synthetic", "--fps", "15",
                 "--animator", "neural", "--preset", "lite", "--backend", "torch-cpu"]) == 0
    captured = capsys.readouterr()
    assert "neural lite on backend torch-cpu" in captured.err
    rows = [ln for ln in captured.out.splitlines() if ln.startswith("neural synthetic 256")]
    assert len(rows) == 1, captured.out
    in_fps, out_fps, p50, p95 = (float(v) for v in rows[0].split()[3:7])
    assert 5 < in_fps < 20 and out_fps > 0 and 0 < p50 <= p95
    assert "networks" in rows[0], "the neural stages are reported"


def test_bench_model_reports_budgets(capsys):
    assert main(["bench", "--model", "--preset", "lite", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    for network in ("warp network", "generator", "enhancer (256->512)", "per-frame chain"):
        assert network in out
    assert "lite: per-frame chain" in out and "within the 6 GFLOPs budget" in out


def test_a_driver_without_frames_writes_nothing(tmp_path, astronaut_source):
    """A driver that gives no frame is an error; the partial file is not moved into place (it was: an
    empty mp4 replaced the output)."""
    from avatar_app.capture.images import ImageSequenceSource
    from avatar_app.errors import InputFileError
    from avatar_app.runtime.render import render_video

    out = tmp_path / "keep.mp4"
    out.write_bytes(b"earlier good video")
    empty = ImageSequenceSource([astronaut_source.crop], fps=25.0, loop=False, count=0)
    assert list(ImageSequenceSource([astronaut_source.crop], fps=25.0, loop=False, count=0)) == []
    with pytest.raises(InputFileError, match="gave no frames"):
        render_video(astronaut_source, empty, out, progress=False, driver_name="the test driver")
    assert out.read_bytes() == b"earlier good video"
    assert not list(tmp_path.glob(".keep.partial*"))
