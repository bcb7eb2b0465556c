"""VideoRecorder writes real mp4 files that OpenCV reads back (no mocks)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar_app.errors import OutputError
from avatar_app.sinks import VideoRecorder

W, H = 64, 48


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
