"""VideoRecorder writes real mp4 files that OpenCV reads back (no mocks)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar_app.errors import OutputError
from avatar_app.sinks import VideoRecorder

W, H = 64, 48
ROOT = Path(__file__).resolve().parents[1]


def encode_index(i: int, w: int = W, h: int = H) -> np.ndarray:
    """A frame whose 8 vertical stripes (each w/8 px) spell ``i`` in binary."""
    img = np.zeros((h, w, 3), np.uint8)
    step = w // 8
    for bit in range(8):
        if i >> bit & 1:
            img[:, bit * step : (bit + 1) * step] = 255
    return img


def decode_index(img: np.ndarray) -> int:
    step = img.shape[1] // 8
    return sum(
        1 << bit
        for bit in range(8)
        if img[:, bit * step + step // 4 : (bit + 1) * step - step // 4].mean() > 128
    )


def read_back(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return frames, fps


def test_recorder_writes_readable_video(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "dir" / "out.mp4"  # parent folders are created
    with VideoRecorder(out, fps=24.0, frame_size=(W, H)) as rec:
        for i in range(15):
            rec.send(encode_index(i))
        assert rec.frames_written == 15
    assert rec.closed
    rec.close()  # idempotent
    frames, fps = read_back(out)
    assert fps == pytest.approx(24.0)
    assert len(frames) == 15
    assert all(f.shape == (H, W, 3) for f in frames)
    assert [decode_index(f) for f in frames] == list(range(15))


def test_recorder_resizes_other_sizes(tmp_path: Path) -> None:
    out = tmp_path / "resized.mp4"
    with VideoRecorder(out, fps=10.0, frame_size=(W, H)) as rec:
        rec.send(encode_index(5, 128, 96))  # bigger
        rec.send(encode_index(6, 32, 24))  # smaller
        rec.send(cv2.cvtColor(encode_index(7), cv2.COLOR_BGR2GRAY))  # gray
    assert rec.frames_written == 3
    frames, _ = read_back(out)
    assert [f.shape for f in frames] == [(H, W, 3)] * 3
    assert [decode_index(f) for f in frames] == [5, 6, 7]


def test_recorder_send_after_close_fails(tmp_path: Path) -> None:
    rec = VideoRecorder(tmp_path / "x.mp4", fps=10.0, frame_size=(W, H))
    rec.close()
    with pytest.raises(RuntimeError):
        rec.send(encode_index(1))


def test_recorder_parent_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="Could not create the folder"):
        VideoRecorder(blocker / "out.mp4", fps=10.0, frame_size=(W, H))


def test_recorder_unwritable_target(tmp_path: Path) -> None:
    target = tmp_path / "taken.mp4"
    target.mkdir()  # a folder where the file should go: the writer cannot open it
    with pytest.raises(OutputError, match="Could not write output video"):
        VideoRecorder(target, fps=10.0, frame_size=(W, H))


def test_recorder_stops_with_a_playable_file_when_the_disk_is_nearly_full(tmp_path: Path) -> None:
    out = tmp_path / "nearly_full.mp4"
    rec = VideoRecorder(out, fps=10.0, frame_size=(W, H))
    for i in range(40):
        rec.send(encode_index(i))
    rec.min_free_bytes = shutil.disk_usage(tmp_path).total + 1  # more than this disk can ever have free
    with pytest.raises(OutputError, match="nearly full.*60 frames so far were kept"):
        for i in range(40, 100):
            rec.send(encode_index(i))
    assert rec.closed and rec.frames_written == 60 == i
    frames, _ = read_back(out)
    assert [decode_index(f) for f in frames] == list(range(60))  # every frame sent is in the file, in order


def test_recorder_nearly_full_before_the_first_frame_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "nothing.mp4"
    rec = VideoRecorder(out, fps=10.0, frame_size=(W, H), min_free_bytes=shutil.disk_usage(tmp_path).total + 1)
    with pytest.raises(OutputError, match="nothing was recorded"):
        rec.send(encode_index(0))
    assert not out.exists()


# A child process whose files may not grow past 40 kB (what a full disk does to a write: it fails);
# SIGXFSZ is ignored so that the write returns an error instead of killing the process.
_FULL_DISK_CHILD = """
import resource, signal, sys
import numpy as np
from avatar_app.errors import OutputError
from avatar_app.sinks import VideoRecorder
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
rng = np.random.default_rng(0)
rec = VideoRecorder(sys.argv[1], fps=10.0, frame_size=(64, 48))
for _ in range(60):
    rec.send(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))  # noise: several kB a frame
try:
    rec.close()
except OutputError as exc:
    print("OutputError:", exc)
"""


def test_recorder_reports_failed_writes_and_removes_the_unplayable_file(tmp_path: Path) -> None:
    out = tmp_path / "full.mp4"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", _FULL_DISK_CHILD, str(out)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "OutputError: Writing" in done.stdout and "of 60 frames could be read back" in done.stdout, done.stdout
    assert "is the disk full?" in done.stdout
    assert not out.exists()
