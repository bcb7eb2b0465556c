"""VirtualCameraSink drives the real ``pyvirtualcam.Camera`` API.

An in-process backend registered with ``pyvirtualcam.camera.register_backend``
stands in for the device: it receives exactly the 1-D payloads a real backend
would, and the tests decode them back to BGR with OpenCV.
"""

from __future__ import annotations

import glob
import platform
import sys

import cv2
import numpy as np
import pytest
import pyvirtualcam
from pyvirtualcam.util import decode_fourcc, encode_fourcc

from avatar_app.errors import DependencyError, OutputError
from avatar_app.sinks import Sink, VirtualCameraSink, VirtualCameraUnavailable
from avatar_app.sinks.virtualcam import PIXEL_FORMATS, fit_rect, layout_frame, setup_help

BACKEND = "avatar-test"
BUSY_DEVICE = "/dev/video-busy"


class RecordingBackend:
    """A pyvirtualcam backend that keeps (copies of) the frames it is sent."""

    instances: list["RecordingBackend"] = []

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device, **kw):
        if device == BUSY_DEVICE:
            raise RuntimeError(f"device {device} is busy\nsecond line that is not shown")
        self.width, self.height, self.fps = width, height, fps
        self.fourcc = decode_fourcc(fourcc)
        self._device = device or "avatar-test-0"
        self.frames: list[np.ndarray] = []
        self.close_calls = 0
        RecordingBackend.instances.append(self)

    def send(self, frame: np.ndarray) -> None:
        assert frame.ndim == 1 and frame.dtype == np.uint8 and frame.flags.c_contiguous
        self.frames.append(frame.copy())  # the sink reuses its buffers

    def close(self) -> None:
        self.close_calls += 1

    def device(self) -> str:
        return self._device

    def native_fourcc(self) -> int:
        return encode_fourcc(self.fourcc)

    def decoded(self, i: int = -1) -> np.ndarray:
        """Frame ``i`` converted back to (H, W, 3) BGR."""
        f, w, h = self.frames[i], self.width, self.height
        if self.fourcc == "24BG":
            return f.reshape(h, w, 3)
        if self.fourcc == "raw ":
            return cv2.cvtColor(f.reshape(h, w, 3), cv2.COLOR_RGB2BGR)
        if self.fourcc == "I420":
            return cv2.cvtColor(f.reshape(h * 3 // 2, w), cv2.COLOR_YUV2BGR_I420)
        if self.fourcc == "NV12":
            return cv2.cvtColor(f.reshape(h * 3 // 2, w), cv2.COLOR_YUV2BGR_NV12)
        if self.fourcc == "YUY2":
            return cv2.cvtColor(f.reshape(h, w, 2), cv2.COLOR_YUV2BGR_YUY2)
        raise AssertionError(f"unexpected fourcc {self.fourcc!r}")


@pytest.fixture
def backend():
    """Register the recording backend for one test; yields the class."""
    RecordingBackend.instances.clear()
    pyvirtualcam.camera.register_backend(BACKEND, RecordingBackend)
    yield RecordingBackend
    pyvirtualcam.camera.BACKENDS.pop(BACKEND, None)
    RecordingBackend.instances.clear()


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


EXPECTED = {  # pixel_format -> (fourcc, bytes per pixel)
    "bgr": ("24BG", 3),
    "rgb": ("raw ", 3),
    "i420": ("I420", 1.5),
    "nv12": ("NV12", 1.5),
    "yuyv": ("YUY2", 2),
}


@pytest.mark.parametrize("fmt", PIXEL_FORMATS)
def test_each_pixel_format_arrives_with_right_size_and_content(backend, astronaut, fmt) -> None:
    w, h = 640, 360
    with VirtualCameraSink(w, h, fps=30, pixel_format=fmt.upper(), backend=BACKEND) as sink:
        assert isinstance(sink, Sink) and sink.name == "virtual camera"
        assert sink.backend == BACKEND and sink.pixel_format == fmt
        sink.send(astronaut)
        sink.send(astronaut[:, ::-1])  # a non-contiguous view is fine too
        assert sink.frames_sent == 2
    cam = backend.instances[0]
    fourcc, bpp = EXPECTED[fmt]
    assert cam.fourcc == fourcc
    assert (cam.width, cam.height, cam.fps) == (w, h, 30)
    assert len(cam.frames) == 2 and all(f.size == int(w * h * bpp) for f in cam.frames)
    expected = layout_frame(astronaut, w, h)
    got = cam.decoded(0)
    assert got.shape == (h, w, 3)
    if fmt in ("bgr", "rgb"):
        np.testing.assert_array_equal(got, expected)
    else:  # YUV round trip + chroma subsampling
        assert mad(got, expected) < 4.0
    assert mad(cam.decoded(1), layout_frame(astronaut[:, ::-1], w, h)) < 4.0


def test_mirror_flips_the_picture(backend, astronaut) -> None:
    img = astronaut.copy()
    img[:, : img.shape[1] // 2] = (0, 0, 255)  # left half red, right half as is
    with VirtualCameraSink(640, 360, mirror=True, backend=BACKEND) as sink:
        sink.send(img)
    got = backend.instances[0].decoded()
    plain = layout_frame(img, 640, 360)
    np.testing.assert_array_equal(got, plain[:, ::-1])
    np.testing.assert_array_equal(layout_frame(img, 640, 360, mirror=True), got)
    # the red half is now on the right of the centre
    assert (got[:, 330:490] == (0, 0, 255)).all()
    assert not (got[:, 150:310] == (0, 0, 255)).all(axis=-1).any()


def test_square_avatar_is_centred_and_scaled_to_height(backend, astronaut) -> None:
    avatar = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    with VirtualCameraSink(backend=BACKEND) as sink:  # 1280x720 by default
        sink.send(avatar)
    frame = backend.instances[0].decoded()
    assert frame.shape == (720, 1280, 3)
    assert fit_rect(256, 256, 1280, 720) == (280, 0, 720, 720)
    centre = frame[:, 280:1000]
    resized = cv2.resize(avatar, (720, 720), interpolation=cv2.INTER_LINEAR)
    assert mad(centre, resized) < 0.5
    # the bars are a smooth (blurred) copy, not black and not the avatar itself
    for bar in (frame[:, :280], frame[:, 1000:]):
        assert bar.mean() > 20
        assert np.abs(np.diff(bar.astype(np.int16), axis=1)).mean() < 2.0
    # and the bars continue the picture's colours: left bar ~ the avatar's left edge
    left_edge = avatar[:, :64].reshape(-1, 3).mean(0)
    right_edge = avatar[:, -64:].reshape(-1, 3).mean(0)
    bar_l = frame[:, :280].reshape(-1, 3).mean(0)
    bar_r = frame[:, 1000:].reshape(-1, 3).mean(0)
    assert np.abs(bar_l - left_edge).sum() < np.abs(bar_l - right_edge).sum()
    assert np.abs(bar_r - right_edge).sum() < np.abs(bar_r - left_edge).sum()


def test_layout_of_other_shapes() -> None:
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    out = layout_frame(wide, 640, 360)  # same aspect: no bars, just downscaled
    expected = cv2.resize(wide, (640, 360), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out, expected)
    tall = rng.integers(0, 256, (400, 100, 3), dtype=np.uint8)
    assert fit_rect(100, 400, 640, 360) == (275, 0, 90, 360)
    buf = np.zeros((360, 640, 3), np.uint8)
    assert layout_frame(tall, 640, 360, out=buf) is buf
    same = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    np.testing.assert_array_equal(layout_frame(same, 640, 360), same)
    gray = layout_frame(same[..., 0], 64, 36)
    bgra = layout_frame(cv2.cvtColor(same, cv2.COLOR_BGR2BGRA), 64, 36)
    assert gray.shape == bgra.shape == (36, 64, 3)
    with pytest.raises(ValueError):
        layout_frame(same.astype(np.float32), 64, 36)


def test_device_name_is_reported(backend) -> None:
    with VirtualCameraSink(320, 240, device="/dev/video7", backend=BACKEND) as sink:
        assert sink.device == "/dev/video7"
    with VirtualCameraSink(320, 240, backend=BACKEND) as sink:
        assert sink.device == "avatar-test-0"


def test_close_is_idempotent_and_closes_backend_once(backend, astronaut) -> None:
    sink = VirtualCameraSink(320, 240, backend=BACKEND)
    sink.send(astronaut)
    sink.close()
    sink.close()
    with sink:
        pass
    cam = backend.instances[0]
    assert cam.close_calls == 1 and sink.closed and sink.frames_sent == 1
    with pytest.raises(RuntimeError):
        sink.send(astronaut)


def test_device_error_becomes_virtual_camera_unavailable(backend) -> None:
    with pytest.raises(VirtualCameraUnavailable) as info:
        VirtualCameraSink(320, 240, device=BUSY_DEVICE, backend=BACKEND)
    msg = str(info.value)
    assert isinstance(info.value, OutputError)
    assert msg.startswith(
        f"No virtual camera is available ('{BACKEND}' backend: device {BUSY_DEVICE} is busy)."
    )
    assert "second line" not in msg and setup_help() in msg and BUSY_DEVICE in msg
    with pytest.raises(VirtualCameraUnavailable, match="no backend named 'nope'"):
        VirtualCameraSink(320, 240, backend="nope")


@pytest.mark.skipif(platform.system() != "Linux", reason="v4l2loopback is the Linux backend")
def test_missing_v4l2loopback_device_explains_setup() -> None:
    if glob.glob("/dev/video*"):
        pytest.skip("this machine has /dev/video* devices; the 'no device' case cannot be shown")
    with pytest.raises(VirtualCameraUnavailable) as info:
        VirtualCameraSink()
    msg = str(info.value)
    assert msg.startswith("No virtual camera is available (")
    assert "v4l2loopback-dkms" in msg and "modprobe v4l2loopback" in msg
    assert info.value.exit_code == OutputError.exit_code


def test_setup_help_per_os() -> None:
    win = setup_help("Windows")
    assert "OBS" in win and "Unity Capture" in win
    assert "OBS" in setup_help("Darwin")
    linux = setup_help("Linux")
    assert "sudo apt install v4l2loopback-dkms" in linux
    assert 'sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label="Avatar Camera"' in linux
    assert "not supported" in setup_help("Plan9")
    assert setup_help() == setup_help(platform.system())


def test_bad_arguments_raise_value_error(backend) -> None:
    with pytest.raises(ValueError, match="bgr, rgb, i420, nv12, yuyv"):
        VirtualCameraSink(pixel_format="mjpeg", backend=BACKEND)
    with pytest.raises(ValueError, match="even"):
        VirtualCameraSink(321, 240, pixel_format="i420", backend=BACKEND)
    with pytest.raises(ValueError):
        VirtualCameraSink(fps=0, backend=BACKEND)
    assert backend.instances == []  # nothing was opened


def test_missing_pyvirtualcam_is_a_dependency_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)  # makes the import fail
    with pytest.raises(DependencyError, match="pip install pyvirtualcam"):
        VirtualCameraSink()
