"""Engines on the CPU: ONNX export parity, torch vs ONNX Runtime frames, INT8 quality,
the engine cache, backend choice and the command line.

The trained weights are ``assets/weights/lite-synthetic.safetensors`` (see
assets/README.md): untrained networks are near-identity by construction, which would
hide precision loss.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from avatar_app.capture.synthetic import SyntheticDriver
from avatar_app.cli import main
from avatar_app.face.source import prepare_source
from avatar_app.models.portrait import PortraitModel, load_checkpoint
from avatar_app.inference.backend import BackendUnavailable, probe
from avatar_app.inference.calibration import CalibrationSet, record_calibration
from avatar_app.inference.engine_cache import EngineCache
from avatar_app.inference.export import PARITY_TOLERANCE, cached_onnx, export_all, model_networks, onnx_session
from avatar_app.inference.selection import choose_backend
from avatar_app.runtime.neural_animator import NeuralAnimator
from avatar_app.types import Landmarks

pytest.importorskip("onnxruntime")
WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "weights" / "lite-synthetic.safetensors"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@pytest.fixture(scope="module")
def trained():
    return load_checkpoint(WEIGHTS)


@pytest.fixture(scope="module")
def hopper_calibration(hopper, still_tracker):
    """Grace Hopper driven by 6 s of the synthetic driver (40 frames); identity fixed (no dlib needed)."""
    source = prepare_source(hopper, 256, tracker=still_tracker)
    drivers = (f.landmarks for f in SyntheticDriver(fps=8, duration=6, seed=3))
    identity = np.random.default_rng(0).standard_normal(128).astype(np.float32) * 0.1
    return record_calibration(source, drivers, identity, frames=40, description="test")


def _frames(animator, cal: CalibrationSet) -> np.ndarray:
    return np.stack([animator.animate(Landmarks(p, (cal.size, cal.size))) for p in cal.targets])


@pytest.mark.parametrize("preset", ["lite", "full"])
def test_every_network_exports_with_onnxruntime_parity(tmp_path, preset):
    model = PortraitModel(preset)
    for p in model.parameters():  # untrained heads are zero: give every weight something to do
        if not p.abs().sum():
            p.data.normal_(0, 0.01)
    rows = export_all(model, tmp_path, 512)
    assert [r["network"] for r in rows] == ["encoder", "flow", "warp", "generator", "enhancer"]
    for r in rows:
        assert r["ok"] and r["max_rel_error"] < PARITY_TOLERANCE, r
        assert Path(r["path"]).stat().st_size == r["bytes"]
    import onnx

    for r in rows:  # static shapes, opset 17, only standard operators (no custom domains)
        m = onnx.load(r["path"])
        assert m.opset_import[0].version == 17
        assert all(n.domain in ("", "ai.onnx") for n in m.graph.node)
        for i in m.graph.input:
            assert all(d.dim_value > 0 for d in i.type.tensor_type.shape.dim), i.name
        grid_ranks = [len(inp.type.tensor_type.shape.dim) for inp in m.graph.value_info if "grid" in inp.name]
        assert all(rank in (0, 4) for rank in grid_ranks)


@pytest.mark.parametrize("size", [256, 512])
def test_animator_gives_the_same_frames_on_torch_cpu_and_onnxruntime(trained, hopper_calibration, hopper,
                                                                      still_tracker, size):
    cal = hopper_calibration
    if size != cal.size:
        source = prepare_source(hopper, size, tracker=still_tracker)
        cal = record_calibration(source, (f.landmarks for f in SyntheticDriver(fps=8, duration=1, seed=3)),
                                 cal.identity, frames=6)
    else:
        cal = cal.split(34)[0]
    a = NeuralAnimator(cal.source(), model=trained, identity=cal.identity, backend="torch-cpu")
    b = NeuralAnimator(cal.source(), model=trained, identity=cal.identity, backend="onnxruntime")
    assert (a.backend, b.backend) == ("torch-cpu", "onnxruntime")
    fa, fb = _frames(a, cal), _frames(b, cal)
    diff = np.abs(fa.astype(int) - fb.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05, (diff.max(), diff.mean())
    assert psnr(fa, np.stack([cal.crop] * len(fa))) < 40  # the avatar moved: the comparison is not trivial


def test_int8_onnxruntime_keeps_quality_on_held_out_frames(trained, hopper_calibration):
    calib, held_out = hopper_calibration.split(8)
    fp32 = NeuralAnimator(held_out.source(), model=trained, identity=held_out.identity, backend="onnxruntime")
    int8 = NeuralAnimator(held_out.source(), model=trained, identity=held_out.identity, backend="onnxruntime",
                          precision="int8", calibration=calib)
    import onnx

    quantized = [b.path for n, b in int8.chain.backends.items() if n in ("warp", "generator")]
    assert all(any(n.op_type == "QuantizeLinear" for n in onnx.load(str(p)).graph.node) for p in quantized)
    a, b = _frames(fp32, held_out), _frames(int8, held_out)
    assert psnr(a, b) >= 30.0, psnr(a, b)
    assert np.abs(a.astype(int) - b.astype(int)).max() > 0  # it is really a different computation


def test_backend_choice_explains_each_option_passed_over():
    missing = {"tensorrt": "tensorrt is not installed", "torch-cuda": "no CUDA GPU is visible",
               "onnxruntime": None, "torch-cpu": None}
    choice = choose_backend("auto", missing.get)
    assert choice.name == "onnxruntime"
    assert choice.rejected == [("tensorrt", "tensorrt is not installed"), ("torch-cuda", "no CUDA GPU is visible")]
    assert "tensorrt: tensorrt is not installed" in choice.explain()
    assert choose_backend("auto", {**missing, "onnxruntime": "onnxruntime is not installed"}.get).name == "torch-cpu"
    assert choose_backend("auto", {**missing, "tensorrt": None}.get, lambda name: None).rejected == []  # trusted
    with pytest.raises(BackendUnavailable, match="torch-cuda backend cannot run here: no CUDA GPU"):
        choose_backend("torch-cuda", missing.get)
    with pytest.raises(BackendUnavailable, match="No inference backend"):
        choose_backend("auto", lambda name: "gone")
    with pytest.raises(BackendUnavailable, match="Unknown backend"):
        choose_backend("metal", missing.get)
    from avatar_app.doctor import backend_checks

    report = backend_checks(missing.get)  # what `avatar-app doctor` prints
    assert [(c.name, c.ok) for c in report[1:5]] == [("tensorrt", False), ("torch-cuda", False), ("onnxruntime", True),
                                                     ("torch-cpu", True)]
    assert report[-1].name == "--backend auto" and report[-1].ok
    assert report[-1].detail.startswith("backend onnxruntime")


def test_real_probe_on_this_machine():
    # Whatever this machine has, torch-cpu is always possible and auto never picks something unusable.
    from avatar_app.inference.backend import probe

    assert probe("torch-cpu") is None
    name = choose_backend("auto").name
    assert probe(name) is None


def test_cache_keys_follow_the_weights_and_a_damaged_export_is_rebuilt(tmp_path, capsys):
    model = PortraitModel("lite")
    a = model_networks(model, 256, ["warp"])["warp"]
    assert a.key("onnx") == model_networks(model, 256, ["warp"])["warp"].key("onnx")  # same weights, same key
    other = PortraitModel("lite")
    other.warp.residual_head.weight.data.add_(0.01)
    assert a.key("onnx") != model_networks(other, 256, ["warp"])["warp"].key("onnx")
    assert a.key("onnx") != a.key("onnx", "fp16")

    cache = EngineCache(tmp_path)
    path = cached_onnx(a, cache)
    assert cached_onnx(a, cache) == path and "damaged" not in capsys.readouterr().out  # reused as is
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    again = cached_onnx(a, cache)
    assert "is damaged (its checksum does not match the manifest); rebuilding it" in capsys.readouterr().out
    onnx_session(again)  # the rebuilt file is a working model
    assert cache.entries()[again.name]["sha256"] != ""


def test_set_model_swaps_weights_in_place(trained, hopper_calibration):
    cal = hopper_calibration.split(36)[0]
    anim = NeuralAnimator(cal.source(), model=PortraitModel("lite"), identity=cal.identity, backend="torch-cpu")
    before = _frames(anim, cal)
    anim.set_model(trained)
    fresh = NeuralAnimator(cal.source(), model=trained, identity=cal.identity, backend="torch-cpu")
    after, expected = _frames(anim, cal), _frames(fresh, cal)
    assert np.array_equal(after, expected)
    assert not np.array_equal(before, after)


def test_calibration_set_files(tmp_path, hopper_calibration):
    path = hopper_calibration.save(tmp_path / "set")
    assert path.suffix == ".npz"
    back = CalibrationSet.load(path)
    assert back.digest == hopper_calibration.digest and len(back) == 40
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    from avatar_app.errors import InputFileError

    with pytest.raises(InputFileError, match="not a readable avatar-app calibration set"):
        CalibrationSet.load(tmp_path / "bad.npz")
    with pytest.raises(InputFileError, match="engines calibrate"):
        CalibrationSet.load(tmp_path / "missing.npz")


def test_cli_export_engines_and_bench(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AVATAR_APP_ENGINES", str(tmp_path / "engines"))
    assert main(["export", "--weights", str(WEIGHTS), "--size", "256", "-o", str(tmp_path / "onnx")]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["encoder.onnx", "flow.onnx", "generator.onnx",
                                                                    "warp.onnx"]
    assert out.count(" ok") == 4
    assert main(["engines", "build", "--backend", "onnxruntime", "--weights", str(WEIGHTS)]) == 0
    assert main(["engines", "list"]) == 0
    listing = capsys.readouterr().out
    assert "4 file(s)" in listing and "warp-onnx-fp32-" in listing
    why = probe("tensorrt", build_only=True)  # None where TensorRT can build here (it may not run here)
    code = main(["engines", "build", "--backend", "tensorrt"])
    if why is None:
        assert code == 0
    else:  # 6 (DependencyError): cannot build here, and the sentence says why
        assert code == 6 and f"The tensorrt backend cannot build here: {why}." in capsys.readouterr().err
    assert main(["engines", "build", "--backend", "onnxruntime", "--precision", "int8"]) == 2  # bad arguments
    assert "needs --calibration" in capsys.readouterr().err
    assert main(["engines", "clean"]) == 0
    assert "removed 4 file(s)" in capsys.readouterr().out
    assert main(["bench", "--backend", "cpu", "--preset", "lite", "--size", "256", "--frames", "3"]) == 0
    table = capsys.readouterr().out
    assert "torch-cpu eager fp32 (baseline)" in table and "onnxruntime fp32" in table and "1.00x" in table


def test_cli_render_picks_and_reports_a_backend(tmp_path, capsys, astronaut_path):
    out = tmp_path / "n.mp4"
    args = ["render", "--source", str(astronaut_path), "--synthetic", "--duration", "0.3", "--fps", "10",
            "--animator", "neural", "--weights", str(WEIGHTS), "-o", str(out), "--no-progress"]
    assert main(args + ["--backend", "onnxruntime"]) == 0
    assert "neural networks on backend onnxruntime" in capsys.readouterr().err
    assert main(args) == 0  # auto
    err = capsys.readouterr().err
    assert "neural networks on backend" in err
    assert main(args + ["--backend", "torch-cpu", "--precision", "int8", "--calibration", "missing.npz"]) == 3
    capsys.readouterr()
    assert main(args + ["--backend", "onnxruntime", "--precision", "fp16"]) == 2
    assert "The onnxruntime backend runs fp32, int8, not fp16; fp16 runs on tensorrt or torch-cuda or torch-cpu" \
        in capsys.readouterr().err
    code = main(args + ["--backend", "torch-cuda"])
    if code:
        assert code == 6 and "torch-cuda backend cannot run here" in capsys.readouterr().err


def _build_in_child(root: str, i: int) -> None:
    cache = EngineCache(root)
    cache.get_or_build({"network": f"n{i}", "kind": "test", "precision": "fp32"}, ".bin",
                       lambda tmp: (time.sleep(0.05), Path(tmp).write_bytes(bytes([i]) * 1000)))


def test_concurrent_builds_keep_every_manifest_entry(tmp_path):
    """Processes and threads building at once: no entry lost, nothing rebuilt, no temp-file clashes."""
    import multiprocessing
    import threading

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_build_in_child, args=(str(tmp_path), i)) for i in range(6)]
    threads = [threading.Thread(target=_build_in_child, args=(str(tmp_path), 100 + i)) for i in range(6)]
    for w in procs + threads:
        w.start()
    for w in procs + threads:
        w.join(60)
    assert all(p.exitcode == 0 for p in procs)
    cache = EngineCache(tmp_path)
    assert len(cache.entries()) == 12
    for i in list(range(6)) + [100 + i for i in range(6)]:
        path = cache.lookup({"network": f"n{i}", "kind": "test", "precision": "fp32"}, ".bin")
        assert path is not None and path.read_bytes() == bytes([i]) * 1000
    assert not list(tmp_path.glob(".*.tmp"))


def test_reset_ignores_whatever_the_old_history_held(trained, hopper, still_tracker):
    """``reset`` must select fresh features, not multiply old ones by 0 (0 * inf = NaN)."""
    from avatar_app.inference.networks import weights_of

    source = prepare_source(hopper, 512, tracker=still_tracker)
    anim = NeuralAnimator(source, model=trained, identity=np.zeros(128, np.float32), backend="torch-cpu")
    spec = anim.chain.networks["enhancer"].spec
    anim.chain.backends["enhancer"].bind({"history": np.full(spec.input("history").shape, np.inf, np.float32)})
    anim.reset()
    out = anim.chain.frame_numpy(*anim.network_inputs(source.landmarks))
    assert np.isfinite(out).all()
    trained.train()
    weights_of(trained, "warp")  # reading weights leaves the caller's model as it was
    assert trained.training
    trained.eval()


def test_onnxruntime_falling_back_from_cuda_says_so(tmp_path, caplog):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: its fall-back to CPU cannot be seen here")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with caplog.at_level("WARNING"):
        session = onnx_session(path)  # CPU asked for: nothing to say
        assert not caplog.records
        session = onnx_session(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.run(None, {"x": np.array([-1.0, 2.0], np.float32)})[0].tolist() == [0.0, 2.0]
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1 and "could not start CUDA for relu.onnx" in said[0] and "runs it on CPU" in said[0]
