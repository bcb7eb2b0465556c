"""TensorRT backend on a GPU: pycuda buffers, engines, parity, INT8, refit, the chain.

These skip, with the reason, where pycuda or TensorRT or a GPU is missing (everywhere
in this project's environment so far; see engines/README.md).  Fixtures come from
``test_tensorrt.py``.
"""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
import torch
import test_tensorrt as pure

from avatar_app.inference.export import model_networks, relative_errors, torch_outputs
from avatar_app.inference.networks import example_inputs

SIZE, TRT_REASON, StandInCalibration = pure.SIZE, pure.TRT_REASON, pure.StandInCalibration
lite, networks, trt_cache = pure.lite, pure.networks, pure.trt_cache  # the same fixtures
needs_trt = pytest.mark.skipif(TRT_REASON is not None, reason=f"TensorRT integration: {TRT_REASON}")
BUILD_REASON = pure.probe("tensorrt", build_only=True)
needs_trt_build = pytest.mark.skipif(BUILD_REASON is not None, reason=f"TensorRT builds: {BUILD_REASON}")
pytestmark = pytest.mark.gpu  # python -m pytest -q -m gpu runs these too


# ---------------------------------------------------------------- pycuda half (GPU, no TensorRT needed)


def _pycuda_reason():
    from avatar_app.inference.backend import cuda_device_reason

    return cuda_device_reason()


PYCUDA_REASON = _pycuda_reason()


class CopyEngine:
    """Stands in for an ICudaEngine: its execution context copies input ``a`` to output ``out``
    on the stream it is given (real pycuda work, so the backend's buffers and ordering are tested)."""

    def __init__(self, stream):
        self.stream, self.addresses, self.runs = stream, {}, 0

    def get_tensor_shape(self, name):
        return (1, 4)

    def create_execution_context(self):
        return self

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def execute_async_v3(self, handle):
        import pycuda.driver as cuda

        assert handle == self.stream.handle, "enqueued on the shared stream"
        cuda.memcpy_dtod_async(self.addresses["out"], self.addresses["a"], 16, self.stream)
        self.runs += 1
        return True


@pytest.mark.skipif(PYCUDA_REASON is not None, reason=f"pycuda on a GPU: {PYCUDA_REASON}")
def test_pycuda_buffers_bind_run_and_chain_device_to_device():
    from avatar_app.inference.networks import NetworkSpec, TensorSpec
    from avatar_app.inference.trt_backend import DeviceArray, TensorRTBackend, _cuda_state

    spec = NetworkSpec("copy", (TensorSpec("a", (1, 4)), TensorSpec("b", (1, 4))), ("out",))
    stages = []
    for _ in range(2):
        b = TensorRTBackend.__new__(TensorRTBackend)  # no TensorRT here: only the engine is stood in for
        b.spec, b.engine = spec, CopyEngine(_cuda_state()["stream"])
        b._allocate()
        stages.append(b)
    first, second = stages
    with pytest.raises(ValueError, match="missing input"):
        first.run({"a": np.ones((1, 4), np.float32)})
    first.bind({"b": np.zeros((1, 4), np.float32)})
    second.bind({"b": np.zeros((1, 4), np.float32)})
    for step in range(3):  # staging buffers are reused: each frame's values must arrive intact
        value = np.arange(4, dtype=np.float64).reshape(1, 4) + 10 * step
        out = first.run({"a": value})["out"]
        assert isinstance(out, DeviceArray) and out.ptr == first.engine.addresses["out"]
        chained = second.run({"a": out})["out"]  # device to device, no host round trip
        assert np.array_equal(second.to_numpy(chained), value.astype(np.float32))
    again = first.run({"a": first.outputs["out"]})["out"]  # its own output fed back (the enhancer's history)
    assert np.array_equal(first.to_numpy(again), value.astype(np.float32))
    if torch.cuda.is_available():  # torch shares the primary context: its pointers are valid here
        t = torch.arange(4, dtype=torch.float32, device="cuda").reshape(1, 4) * 7
        torch.cuda.synchronize()
        got = first.to_numpy(first.run({"a": DeviceArray(t.data_ptr(), (1, 4), np.float32)})["out"])
        assert np.array_equal(got, t.cpu().numpy())
        assert float((t + 1).sum()) == 46.0, "torch still works after pycuda pushed and popped the context"


# ---------------------------------------------------------------- integration (TensorRT + GPU)


def _backend(trt_cache, precision="fp16", **kw):
    from avatar_app.inference.trt_backend import TensorRTBackend

    return TensorRTBackend(precision, cache=trt_cache, **kw)


@needs_trt
@pytest.mark.parametrize("name", ["encoder", "flow", "warp", "generator", "enhancer"])
def test_fp16_engine_matches_torch(networks, trt_cache, name):
    net = networks[name]
    b = _backend(trt_cache)
    b.load(net)
    inputs = example_inputs(net.spec, 3)
    got = {k: b.to_numpy(v) for k, v in b.run(inputs).items()}
    errors = relative_errors(torch_outputs(net, inputs), got)
    assert max(errors.values()) < (1e-3 if name == "flow" else 2e-2), errors


@needs_trt
def test_chain_runs_on_device_arrays_and_matches_torch(lite, trt_cache):
    from avatar_app.inference.chain import NetworkChain
    from avatar_app.inference.trt_backend import DeviceArray

    specs = {n: net.spec for n, net in model_networks(lite, SIZE).items()}
    enc, gen, warp, enh, flow = (example_inputs(specs[n], 1) for n in ("encoder", "generator", "warp", "enhancer",
                                                                        "flow"))
    args = (enc["source"], enc["source_cond"], gen["identity"], flow["source_xy"], enh["source_full"])
    frame = (warp["target_cond"], flow["target_xy"], flow["tri_ids"], 0.5)
    outs = {}
    for backend in ("tensorrt", "torch-cpu"):
        chain = NetworkChain(lite, SIZE, backend=backend, cache=trt_cache)
        chain.set_source(*args)
        value, _ = chain.frame(*frame)
        if backend == "tensorrt":
            assert isinstance(value, DeviceArray), "the chain's values stay on the GPU"
        outs[backend] = chain.frame_numpy(*frame)  # second frame: the history path
    assert relative_errors({"o": outs["torch-cpu"]}, {"o": outs["tensorrt"]})["o"] < 3e-2


@needs_trt
def test_int8_engine_builds_from_calibration_frames(networks, trt_cache):
    from avatar_app.inference.trt_api import load

    net = networks["warp"]
    b = _backend(trt_cache, "int8", calibration=StandInCalibration())
    b.load(net)
    assert b.built_precision == "int8"
    inputs = example_inputs(net.spec, 9)
    got = {k: b.to_numpy(v) for k, v in b.run(inputs).items()}
    assert max(relative_errors(torch_outputs(net, inputs), got).values()) < 0.15
    kinds = [e["key"]["kind"] for e in trt_cache.entries().values()]
    assert ("tensorrt-calibration" in kinds) == (not load().strongly_typed), kinds


@needs_trt
def test_refit_swaps_in_personalized_weights_without_rebuilding(lite, networks, trt_cache, capsys):
    net = networks["generator"]
    b = _backend(trt_cache)
    b.load(net)
    personal = copy.deepcopy(lite)
    with torch.no_grad():
        for p in personal.generator.parameters():
            p.mul_(1.05).add_(0.01)
    new = model_networks(personal, SIZE, names=["generator"])["generator"]
    assert b.refit(new) > 10
    assert "rebuilding" not in capsys.readouterr().out
    inputs = example_inputs(net.spec, 4)
    got = {k: b.to_numpy(v) for k, v in b.run(inputs).items()}
    assert max(relative_errors(torch_outputs(new, inputs), got).values()) < 2e-2
    assert max(relative_errors(torch_outputs(net, inputs), got).values()) > 2e-2, "still the old weights"
    assert trt_cache.lookup(b.key(new), ".engine") is not None, "the refitted engine is cached for next time"


@needs_trt
def test_undeserializable_engine_file_is_rebuilt_with_a_message(networks, trt_cache, capsys):
    net = networks["encoder"]
    b = _backend(trt_cache)
    path = b.engine_path(net)
    path.write_bytes(b"\0" * path.stat().st_size)
    entries = trt_cache.entries()
    entries[path.name]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    trt_cache._write_manifest(entries)  # the manifest agrees: only deserialization can tell
    b.load(net)
    assert "rebuilding" in capsys.readouterr().out
    inputs = example_inputs(net.spec, 2)
    got = {k: b.to_numpy(v) for k, v in b.run(inputs).items()}
    assert max(relative_errors(torch_outputs(net, inputs), got).values()) < 2e-2


# ---------------------------------------------------------------- builds (a GPU that may not run the engines)


def _deserialized(path):
    """``(engine, None)``, or ``(None, why)`` where this GPU cannot load this TensorRT's engines."""
    from avatar_app.inference.trt_api import load
    from avatar_app.inference.trt_backend import _trt_logger, cuda_context

    with cuda_context():
        try:
            engine = load().module.Runtime(_trt_logger()).deserialize_cuda_engine(path.read_bytes())
        except Exception as exc:  # some versions raise instead of returning None
            return None, str(exc)
    return engine, None if engine is not None else "deserialize_cuda_engine returned None (see its log above)"


@needs_trt_build
@pytest.mark.parametrize("name", ["encoder", "flow", "warp", "generator", "enhancer"])
def test_engines_build_are_cached_and_keep_the_networks_interface(networks, trt_cache, name):
    from avatar_app.inference.trt_build import check_io, engine_io, ordered_like

    net = networks[name]
    b = _backend(trt_cache, build_only=True)
    path = b.engine_path(net)
    entries = trt_cache.entries()
    assert entries[path.name]["key"] == b.key(net) and path.stat().st_size > 0
    assert b.engine_path(net) == path and trt_cache.entries() == entries, "built once, then reused"
    engine, why = _deserialized(path)
    if engine is None:
        pytest.skip(f"this GPU cannot load {b.flavour.label} engines: {why}")
    check_io(net.spec, *ordered_like(net.spec, *engine_io(engine)), what="built engine")
    assert engine.refittable


@needs_trt_build
def test_built_engine_takes_personalized_weights_by_refit(lite, networks, trt_cache):
    from avatar_app.inference.networks import weights_of
    from avatar_app.inference.trt_backend import _trt_logger, cuda_context
    from avatar_app.inference.trt_refit import onnx_initializers, refit_engine

    net = networks["generator"]
    b = _backend(trt_cache, build_only=True)
    engine, why = _deserialized(b.engine_path(net))
    if engine is None:
        pytest.skip(f"this GPU cannot load {b.flavour.label} engines: {why}")
    personal = copy.deepcopy(lite)
    with torch.no_grad():
        for p in personal.generator.parameters():
            p.mul_(1.05).add_(0.01)
    new = model_networks(personal, SIZE, names=["generator"])["generator"]
    with cuda_context():
        count = refit_engine(engine, weights_of(new.model, net.name, net.size),
                             lambda: onnx_initializers(b.exported_onnx(new, "fp16")),
                             _trt_logger(), b.flavour.module)
    assert count > 10
