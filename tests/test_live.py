"""`avatar-app live` as a user runs it, and the pipeline feeding a real pyvirtualcam.Camera."""

from __future__ import annotations

import platform
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

pyvirtualcam = pytest.importorskip("pyvirtualcam")

from avatar_app.capture.synthetic import SyntheticDriver  # noqa: E402
from avatar_app.cli import main  # noqa: E402
from avatar_app.runtime.animator import GeometricAnimator  # noqa: E402
from avatar_app.runtime.pipeline import Pipeline  # noqa: E402
from avatar_app.sinks.virtualcam import PIXEL_FORMATS, VirtualCameraSink, layout_frame  # noqa: E402

from test_virtualcam import BACKEND, backend, mad  # noqa: E402,F401  (backend: the in-process pyvirtualcam fixture)


def _frame_count(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


# Frame-index stamps: 12 blocks of 20 x 20 px across the top of each 256 avatar: 10 bits of the
# avatar's number, then a white and a black marker block (a frame without them has no stamp).
BITS, BLOCK = 10, 20


class StampingAnimator:
    """The real geometric animator, each avatar stamped with its number (0, 1, 2 ...)."""

    def __init__(self, source):
        self.inner = GeometricAnimator(source)
        self.made = 0
        self.timings: dict[str, float] = {}

    def set_source(self, portrait) -> None:
        self.inner.set_source(portrait)

    def animate(self, target) -> np.ndarray:
        image = self.inner.animate(target).copy()
        blocks = [(self.made >> b) & 1 for b in range(BITS)] + [1, 0]
        for k, on in enumerate(blocks):
            image[2:2 + BLOCK, 8 + k * BLOCK:8 + (k + 1) * BLOCK] = 255 if on else 0
        self.made += 1
        self.timings = self.inner.timings
        return image


def _block_centres(width: int, height: int) -> list[tuple[int, int]]:
    """Where each stamp block's centre lands in a ``width x height`` camera frame (found by laying out probes)."""
    centres = []
    for k in range(BITS + 2):
        probe = np.zeros((256, 256, 3), np.uint8)
        probe[2:2 + BLOCK, 8 + k * BLOCK:8 + (k + 1) * BLOCK] = 255
        ys, xs = np.nonzero(layout_frame(probe, width, height)[..., 0] > 128)
        centres.append((int(ys.mean()), int(xs.mean())))
    return centres


def _stamp(image: np.ndarray, centres) -> int | None:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    on = [grey[y - 2:y + 3, x - 2:x + 3].mean() > 128 for y, x in centres]
    if not (on[BITS] and not on[BITS + 1]):
        return None
    return sum(1 << b for b in range(BITS) if on[b])


@pytest.mark.parametrize("fmt", PIXEL_FORMATS)
def test_pipeline_streams_every_avatar_to_the_virtual_camera_in_order(astronaut_source, backend, fmt):
    w, h = 640, 480
    sink = VirtualCameraSink(w, h, 30, device="mem-test", pixel_format=fmt, backend=BACKEND)
    animator = StampingAnimator(astronaut_source)
    own: list[np.ndarray] = []  # every avatar the sink thread took, in its order
    p = Pipeline(astronaut_source, SyntheticDriver(fps=30, duration=None, realtime=True), [sink], fps=30,
                 animator=animator)
    p.subscribe(lambda f: own.append(f.image))
    p.start()
    time.sleep(1.2)
    p.stop()
    cam = backend.instances[-1]
    assert sink.device == "mem-test" and (cam.width, cam.height) == (w, h)
    centres = _block_centres(w, h)
    sent = [_stamp(img, [(2 + BLOCK // 2, 8 + k * BLOCK + BLOCK // 2) for k in range(BITS + 2)]) for img in own]
    got = [_stamp(cam.decoded(i), centres) for i in range(len(cam.frames))]
    assert len(sent) >= 20 and sent == sorted(set(sent))  # distinct avatars, numbered in the order made
    first = next(i for i, s in enumerate(got) if s is not None)
    assert all(s is None for s in got[:first])  # before the first avatar: the unstamped portrait
    stamps = got[first:]
    assert None not in stamps and stamps == sorted(stamps)  # nothing reordered
    assert sorted(set(stamps)) == sent  # nothing dropped, nothing unknown (repeats only of the last one)
    # and the pixels are the avatar's: exact for BGR/RGB, YUV within its round trip
    by_stamp = dict(zip(sent, own))
    for i in range(first, len(cam.frames), 7):
        expected = layout_frame(by_stamp[got[i]], w, h)
        if fmt in ("bgr", "rgb"):
            np.testing.assert_array_equal(cam.decoded(i), expected)
        else:
            assert mad(cam.decoded(i), expected) < 4.0


def test_live_records_and_prints_fps_and_latency(tmp_path, capsys, astronaut_path):
    out = tmp_path / "live.mp4"
    code = main(["live", "--source", str(astronaut_path), "--synthetic", "--record", str(out),
                 "--duration", "2", "--stats-every", "0.5"])
    assert code == 0
    captured = capsys.readouterr()
    assert "fps" in captured.err and "latency" in captured.err  # periodic stats
    final = [ln for ln in captured.out.splitlines() if ln.startswith("live:")]
    assert final and "latency p50" in final[0]
    assert 40 <= _frame_count(out) <= 75  # about 2 s at 30 fps


@pytest.mark.skipif(platform.system() != "Linux", reason="checks the Linux v4l2loopback message")
def test_missing_virtual_camera_warns_and_recording_continues(tmp_path, capsys, astronaut_path):
    if list(__import__("pathlib").Path("/dev").glob("video*")):
        pytest.skip("a video device exists on this machine")
    out = tmp_path / "rec.mp4"
    code = main(["live", "--source", str(astronaut_path), "--synthetic", "--virtual-camera", "--record", str(out),
                 "--duration", "1.5", "--stats-every", "0"])
    assert code == 0
    err = capsys.readouterr().err
    assert "v4l2loopback-dkms" in err and "modprobe v4l2loopback" in err
    assert _frame_count(out) >= 30


def test_virtual_camera_alone_missing_is_an_error(capsys, astronaut_path):
    if platform.system() != "Linux" or list(__import__("pathlib").Path("/dev").glob("video*")):
        pytest.skip("needs a Linux machine without video devices")
    code = main(["live", "--source", str(astronaut_path), "--synthetic", "--virtual-camera", "--duration", "1"])
    assert code == 7
    assert "v4l2loopback" in capsys.readouterr().err


def test_bad_vcam_size(capsys, astronaut_path):
    code = main(["live", "--source", str(astronaut_path), "--synthetic", "--vcam-size", "big", "--duration", "1"])
    assert code == 2  # bad arguments, as argparse's own
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


def test_ctrl_c_stops_cleanly(tmp_path, astronaut_path):
    out = tmp_path / "ctrlc.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "avatar_app", "live", "--source", str(astronaut_path), "--synthetic",
         "--record", str(out), "--stats-every", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline and "fps | latency" not in line:  # not the notes before it, which
            line = proc.stderr.readline()  # can name an fps: wait for the first stats line, so it is running
        assert "fps | latency" in line
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "live:" in stdout and "Traceback" not in stderr
    assert _frame_count(out) > 20
