"""``auto`` takes TensorRT only after a passed first-use self-test on this GPU, remembered per GPU
and version.  The real test needs TensorRT and a GPU; its logic runs here on fake backends that
compute the networks with torch (exactly, off by a margin, with a NaN, or failing to build)."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_app.doctor import backend_checks
from avatar_app.inference import selftest
from avatar_app.inference.backend import BackendUnavailable
from avatar_app.inference.export import model_networks, torch_outputs
from avatar_app.inference.selection import choose_backend
from avatar_app.inference.selftest import TOLERANCE, Verdict, VerdictStore, self_test
from avatar_app.models.shipped import untrained_model

ALL_RUN = {"tensorrt": None, "torch-cuda": None, "onnxruntime": None, "torch-cpu": None}.get


class FakeBackend:
    """Runs a network with torch; ``error`` scales a deviation added to every output."""

    def __init__(self, error: float = 0.0, fail: str | None = None, nan: bool = False):
        self.error, self.fail, self.nan = error, fail, nan

    def load(self, network) -> None:
        if self.fail:
            raise RuntimeError(self.fail)
        self.network = network

    def run(self, inputs):
        out = torch_outputs(self.network, inputs)
        for k, v in out.items():
            v = v + self.error * np.abs(v).max()
            if self.nan:
                v = v.copy()
                v.flat[0] = np.nan
            out[k] = v
        return out

    def to_numpy(self, value):
        return value


@pytest.fixture(scope="module")
def networks():
    return model_networks(untrained_model("lite"), 256, ["flow", "warp"])


def test_the_self_test_judges_a_backend_against_torch(networks):
    ok = self_test("fake", "GPU X", "1.0", networks, FakeBackend)
    assert ok.ok and "worst relative error" in ok.detail and "2 networks" in ok.detail
    close = self_test("fake", "GPU X", "1.0", networks, lambda: FakeBackend(TOLERANCE / 2))
    assert close.ok
    off = self_test("fake", "GPU X", "1.0", networks, lambda: FakeBackend(TOLERANCE * 3))
    assert not off.ok and "off by" in off.detail and off.detail.startswith("flow")
    broken = self_test("fake", "GPU X", "1.0", networks, lambda: FakeBackend(fail="no kernel for sm_90"))
    assert not broken.ok and "RuntimeError: no kernel for sm_90" in broken.detail
    nan = self_test("fake", "GPU X", "1.0", networks, lambda: FakeBackend(nan=True))
    assert not nan.ok and "not finite" in nan.detail


def test_verdicts_are_kept_per_gpu_and_version(tmp_path, caplog):
    store = VerdictStore(tmp_path / "v.json")
    assert store.get("tensorrt", "RTX 4090", "10.9") is None
    store.put(Verdict("tensorrt", "RTX 4090", "10.9", True, "fine", "2026-11-30 12:00", 61.0))
    store.put(Verdict("tensorrt", "H200", "10.9", False, "cannot run cc 9.0", "2026-11-30 12:05", 3.0))
    again = VerdictStore(tmp_path / "v.json")  # another start reads the file
    assert again.get("tensorrt", "RTX 4090", "10.9").ok
    assert not again.get("tensorrt", "H200", "10.9").ok
    assert again.get("tensorrt", "RTX 4090", "11.0") is None  # a new TensorRT is tested again
    (tmp_path / "v.json").write_text("{not json")
    assert VerdictStore(tmp_path / "v.json").get("tensorrt", "RTX 4090", "10.9") is None
    assert "unreadable" in caplog.text


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    """TensorRT 'installed' on an 'RTX 4090' whose self-test passes or fails as ``outcome`` says."""
    monkeypatch.setenv("AVATAR_APP_ENGINES", str(tmp_path))  # the verdicts file lives beside the engines
    state = {"runs": 0, "ok": True}

    def test(device, version):
        state["runs"] += 1
        return Verdict("tensorrt", device, version, state["ok"], "fake", "now", 0.1)

    monkeypatch.setitem(selftest.SELF_TESTED, "tensorrt", (lambda: ("RTX 4090", "10.9"), test))
    return state


def test_auto_takes_tensorrt_only_after_it_passed_once(fake_gpu, tmp_path):
    assert choose_backend("auto", ALL_RUN).name == "tensorrt"  # first use: tested, passed
    assert choose_backend("auto", ALL_RUN).name == "tensorrt" and fake_gpu["runs"] == 1  # then only read
    assert (tmp_path / selftest.VERDICTS).is_file()


def test_auto_passes_over_tensorrt_that_failed_and_says_why(fake_gpu):
    fake_gpu["ok"] = False
    choice = choose_backend("auto", ALL_RUN)
    assert choice.name == "torch-cuda" and choice.rejected[0][0] == "tensorrt"
    assert "self-test on RTX 4090 with tensorrt 10.9 failed (fake" in choice.explain()
    assert choose_backend("auto", ALL_RUN).name == "torch-cuda" and fake_gpu["runs"] == 1  # not retried each start
    assert choose_backend("tensorrt", ALL_RUN).name == "tensorrt"  # asked for by name: taken as asked


def test_doctor_prints_the_verdict_without_running_a_test(fake_gpu):
    probe = {"tensorrt": None, "torch-cuda": "no CUDA GPU is visible", "onnxruntime": None, "torch-cpu": None}.get
    report = {c.name: c for c in backend_checks(probe)}
    line = report["tensorrt self-test"]
    assert not line.ok and "not self-tested on RTX 4090" in line.detail and fake_gpu["runs"] == 0
    assert report["--backend auto"].detail.startswith("backend onnxruntime (passed over tensorrt: not self-tested")
    choose_backend("auto", probe)  # a neural start tests it
    report = {c.name: c for c in backend_checks(probe)}
    assert report["tensorrt self-test"].ok and "passed" in report["tensorrt self-test"].detail
    assert report["--backend auto"].detail == "backend tensorrt"


def test_without_a_gpu_to_name_tensorrt_is_passed_over(monkeypatch, tmp_path):
    monkeypatch.setenv("AVATAR_APP_ENGINES", str(tmp_path))

    def no_gpu():
        raise ImportError("No module named 'pycuda'")

    monkeypatch.setitem(selftest.SELF_TESTED, "tensorrt", (no_gpu, None))
    choice = choose_backend("auto", ALL_RUN)
    assert choice.name == "torch-cuda" and "cannot name the GPU" in choice.rejected[0][1]
    with pytest.raises(BackendUnavailable):
        choose_backend("auto", lambda name: "gone")
