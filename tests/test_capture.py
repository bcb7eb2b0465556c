"""Frame sources against real small videos written with OpenCV (no mocks)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

from avatar_app.capture import CameraSource, CameraState, FrameSource, VideoFileSource, list_cameras
from avatar_app.errors import CameraError, InputFileError
from avatar_app.types import Frame

W, H = 64, 48


def encode_index(i: int) -> np.ndarray:
    """A (48, 64, 3) frame whose 8 vertical 8-px stripes spell ``i`` in binary (bit k = stripe k)."""
    img = np.zeros((H, W, 3), np.uint8)
    for bit in range(8):
        if i >> bit & 1:
            img[:, bit * 8 : bit * 8 + 8] = 255
    return img


def decode_index(img: np.ndarray) -> int:
    """Inverse of :func:`encode_index`, robust to mp4v compression noise."""
    return sum(1 << bit for bit in range(8) if img[:, bit * 8 + 2 : bit * 8 + 6].mean() > 128)


def write_video(path: Path, n: int, fps: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    assert writer.isOpened()
    for i in range(n):
        writer.write(encode_index(i))
    writer.release()
    return path


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def camera_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("CameraSource(")]


@pytest.fixture
def video12(tmp_path: Path) -> Path:
    return write_video(tmp_path / "drive.mp4", n=12, fps=20.0)


# ---------------------------------------------------------------- VideoFileSource


def test_video_source_frames_order_timestamps(video12: Path) -> None:
    src = VideoFileSource(video12)
    assert isinstance(src, FrameSource)
    assert src.fps == pytest.approx(20.0)
    assert src.frame_count == 12
    assert src.frame_size == (W, H)
    with src:
        frames = list(src)
    assert [f.index for f in frames] == list(range(12))
    assert [decode_index(f.image) for f in frames] == list(range(12))
    assert [f.timestamp for f in frames] == pytest.approx([i / 20.0 for i in range(12)])
    for f in frames:
        assert isinstance(f, Frame)
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
    src.close()  # idempotent
    src.close()


def test_video_source_loop(video12: Path) -> None:
    with VideoFileSource(video12, loop=True) as src:
        frames = []
        for f in src:
            frames.append(f)
            if len(frames) == 30:
                break
    assert [decode_index(f.image) for f in frames] == [i % 12 for i in range(30)]
    assert [f.index for f in frames] == list(range(30))
    assert np.all(np.diff([f.timestamp for f in frames]) > 0)


def test_video_source_missing(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="does not exist"):
        VideoFileSource(tmp_path / "nope.mp4")


@pytest.mark.parametrize("content", [b"", b"this is not a video\n" * 50])
def test_video_source_corrupt(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(InputFileError, match="could not be decoded"):
        VideoFileSource(path)


def test_video_source_directory(tmp_path: Path) -> None:
    with pytest.raises(InputFileError):
        VideoFileSource(tmp_path)


# ------------------------------------------------------------------- CameraSource


def test_camera_on_video_device_streams(tmp_path: Path) -> None:
    path = write_video(tmp_path / "cam.mp4", n=40, fps=40.0)
    cam = CameraSource(str(path), stall_timeout=0.5, retry_interval=0.1)
    assert cam.state == CameraState.CLOSED
    with cam:
        assert cam.state in (CameraState.OPENING, CameraState.STREAMING)
        assert cam.fps == pytest.approx(40.0)
        assert wait_for(lambda: cam.state == "streaming", 2.0)
        frames = []
        for f in cam:
            frames.append(f)
            if len(frames) == 5:
                break
        assert cam.frame_size == (W, H)
    assert cam.state == CameraState.CLOSED
    for f in frames:
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
    indexes = [f.index for f in frames]
    assert indexes == sorted(set(indexes))
    assert np.all(np.diff([f.timestamp for f in frames]) > 0)
    assert cam.read(0.05) is None  # closed


def test_camera_latest_wins(tmp_path: Path) -> None:
    path = write_video(tmp_path / "cam.mp4", n=100, fps=50.0)  # 2 s, paced at 50 fps
    with CameraSource(str(path)) as cam:
        first = cam.read(timeout=2.0)
        assert first is not None
        time.sleep(0.4)  # a slow consumer: ~20 frames are produced meanwhile
        t = time.monotonic()
        second = cam.read(timeout=1.0)
        assert second is not None
        # newest frame, not the one right after `first`
        assert second.index - first.index >= 10
        assert decode_index(second.image) - decode_index(first.image) >= 10
        assert t - second.timestamp < 0.2  # it is fresh
        # each frame is handed out once: the next read waits for a new one
        third = cam.read(timeout=1.0)
        assert third is not None and third.index > second.index
        seen = [f.index for f in (cam.read(0.5) for _ in range(10)) if f is not None]
        assert len(seen) == len(set(seen)) and seen == sorted(seen)
        assert seen[0] > third.index


def test_camera_missing_device_raises_fast(tmp_path: Path) -> None:
    t = time.monotonic()
    cam = CameraSource(str(tmp_path / "no_such_camera"))
    with pytest.raises(CameraError, match="Could not open camera"):
        cam.open()
    assert time.monotonic() - t < 5.0
    assert cam.state == CameraState.CLOSED
    assert not camera_threads()
    cam.close()  # harmless


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="index probing differs")
def test_camera_missing_index_raises_fast() -> None:
    if os.path.exists("/dev/video63"):
        pytest.skip("this machine has a /dev/video63")
    t = time.monotonic()
    with pytest.raises(CameraError, match="camera 63"):
        with CameraSource(63):
            pass
    assert time.monotonic() - t < 5.0


def test_camera_reconnects(tmp_path: Path) -> None:
    path = write_video(tmp_path / "cam.mp4", n=20, fps=40.0)  # 0.5 s per pass
    away = tmp_path / "unplugged.mp4"
    cam = CameraSource(str(path), reconnect=True, retry_interval=0.1, stall_timeout=0.5)
    with cam:
        assert wait_for(lambda: cam.state == CameraState.STREAMING, 2.0)
        os.rename(path, away)  # "unplug": the open file plays out, reopening fails
        assert wait_for(lambda: cam.state == CameraState.LOST, 3.0)
        last_index = -1
        while (old := cam.read(0.0)) is not None:  # a frame left from before the loss
            last_index = old.index
        time.sleep(0.35)  # several failed retries
        assert cam.state == CameraState.LOST
        assert cam.read(0.0) is None
        os.rename(away, path)  # "plug back in"
        assert wait_for(lambda: cam.state == CameraState.STREAMING, 3.0)
        frame = cam.read(timeout=1.0)
        assert frame is not None and frame.index > last_index
        assert decode_index(frame.image) < 10  # the device started over


def test_camera_iter_waits_while_lost(tmp_path: Path) -> None:
    """Iterating does not raise during a loss; it resumes after reconnecting."""
    path = write_video(tmp_path / "cam.mp4", n=10, fps=50.0)  # 0.2 s per pass
    cam = CameraSource(str(path), reconnect=True, retry_interval=0.2, stall_timeout=0.5)
    frames = []
    with cam:
        t_end = time.monotonic() + 1.2
        for frame in cam:  # the file ends every 0.2 s -> lost -> reopened 0.2 s later
            frames.append(frame)
            if time.monotonic() > t_end:
                break
    assert cam.state == CameraState.CLOSED
    content = [decode_index(f.image) for f in frames]
    restarts = sum(1 for a, b in zip(content, content[1:]) if b < a)
    assert restarts >= 2  # played through several losses and reconnects
    indexes = [f.index for f in frames]
    assert indexes == sorted(set(indexes))


def test_camera_without_reconnect_stops(tmp_path: Path) -> None:
    path = write_video(tmp_path / "cam.mp4", n=10, fps=50.0)
    with CameraSource(str(path), reconnect=False, stall_timeout=0.5) as cam:
        with pytest.raises(CameraError, match="stopped delivering frames"):
            for _ in cam:
                pass
        assert cam.state == CameraState.LOST
        assert wait_for(lambda: not camera_threads(), 1.0)


def test_camera_close_joins_thread(tmp_path: Path) -> None:
    path = write_video(tmp_path / "cam.mp4", n=40, fps=40.0)
    cam = CameraSource(str(path), retry_interval=5.0)
    cam.open()
    assert wait_for(lambda: cam.state == CameraState.STREAMING, 2.0)
    assert len(camera_threads()) == 1

    # close while another thread is waiting in read(): it must wake up too
    def consume() -> None:
        while cam.read(timeout=10.0) is not None:
            pass

    reader = threading.Thread(target=consume)
    reader.start()
    time.sleep(0.1)
    t = time.monotonic()
    cam.close()
    assert time.monotonic() - t < 1.0
    assert not camera_threads()
    reader.join(timeout=1.0)
    assert not reader.is_alive()
    cam.close()  # idempotent
    assert cam.state == CameraState.CLOSED


def test_camera_close_while_lost_is_prompt(tmp_path: Path) -> None:
    """close() does not wait out a long retry_interval."""
    path = write_video(tmp_path / "cam.mp4", n=5, fps=50.0)
    cam = CameraSource(str(path), retry_interval=30.0, stall_timeout=0.5)
    cam.open()
    assert wait_for(lambda: cam.state == CameraState.LOST, 2.0)
    t = time.monotonic()
    cam.close()
    assert time.monotonic() - t < 1.0
    assert not camera_threads()


def test_list_cameras() -> None:
    cams = list_cameras()
    assert isinstance(cams, list) and all(isinstance(c, str) for c in cams)
    if sys.platform.startswith("linux"):
        expected = {"/dev/" + name for name in os.listdir("/dev") if name.startswith("video")}
        assert set(cams) == expected
