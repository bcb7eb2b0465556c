"""TensorRT and TensorRT for RTX through one code path: which one is used, what sets them
apart (typing, runtime cache, GPUs their engines run on), and the fp16 export that strongly
typed builds start from.  Pure logic with stand-in modules; the real libraries are exercised
in ``test_tensorrt_gpu.py`` on a GPU machine (see engines/README.md).
"""

from __future__ import annotations

import sys
import types

import onnx
import pytest
import torch

from avatar_app.models.portrait import PortraitModel
from avatar_app.inference import backend, trt_api, trt_backend
from avatar_app.inference.engine_cache import EngineCache
from avatar_app.inference.export import FP16_PARITY_TOLERANCE, cached_onnx, check_parity, model_networks
from avatar_app.inference.trt_build import onnx_source, runtime_cache_key


def stand_in(version: str, fp16_flag: bool, runtime_cache: bool = False, sm=()) -> types.ModuleType:
    """A module with the few attributes :mod:`trt_api` reads."""
    mod = types.ModuleType("stand_in_tensorrt")
    mod.__version__ = version
    mod.BuilderFlag = type("BuilderFlag", (), {"REFIT": 1, **({"FP16": 2} if fp16_flag else {})})
    mod.ICudaEngine = type("ICudaEngine", (), {"create_runtime_config": None} if runtime_cache else {})
    if runtime_cache:
        mod.IRuntimeCache = object
    if sm:
        mod.ComputeCapability = types.SimpleNamespace(__members__={"NONE": 0, "CURRENT": 1, **{f"SM{s}": s for s in sm}})
    return mod


@pytest.fixture
def installed(monkeypatch):
    """Install stand-in TensorRT modules by import name; forget what an earlier search found."""
    monkeypatch.setattr(trt_api, "_FOUND", {})
    monkeypatch.setattr(trt_api, "_LOGGER", {})
    monkeypatch.delenv(trt_api.ENV, raising=False)
    for name in ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: "not installed"

    def install(**modules):
        for name, mod in modules.items():
            monkeypatch.setitem(sys.modules, name, mod)

    return install


def test_full_tensorrt_is_preferred_and_the_environment_can_choose(installed, monkeypatch):
    installed(tensorrt=stand_in("10.9.0", fp16_flag=True), tensorrt_rtx=stand_in("1.7.1.116", False, True))
    found, why = trt_api.find()
    assert why is None and not found.rtx and found.label == "TensorRT 10.9.0" and found.key == "10.9.0"
    assert not found.strongly_typed and not found.runtime_cache
    monkeypatch.setenv(trt_api.ENV, "tensorrt_rtx")
    found, _ = trt_api.find()
    assert found.rtx and found.label == "TensorRT for RTX 1.7.1.116" and found.key == "rtx-1.7.1.116"
    assert found.strongly_typed and found.runtime_cache
    monkeypatch.setenv(trt_api.ENV, "tensorrt-llm")
    assert trt_api.find() == (None, f"${trt_api.ENV} is 'tensorrt-llm'; it can be tensorrt or tensorrt_rtx")


def test_rtx_bindings_alone_are_found_and_an_old_tensorrt_is_passed_over_with_the_reason(installed):
    installed(tensorrt=stand_in("8.6.1", fp16_flag=True), tensorrt_rtx_bindings=stand_in("1.7.1.116", False, True))
    found, why = trt_api.find()
    assert why is None and found.rtx and found.module is sys.modules["tensorrt_rtx_bindings"]
    trt_api._FOUND.clear()
    sys.modules["tensorrt_rtx_bindings"] = None
    assert trt_api.find() == (None, "TensorRT 8.6.1 is too old (10 or newer is needed)")


def test_nothing_installed_says_how_to_install(installed):
    found, why = trt_api.find()
    assert found is None and 'pip install "avatar-app[tensorrt]"' in why
    with pytest.raises(ImportError, match="avatar-app\\[tensorrt\\]"):
        trt_api.load()


def test_which_gpus_run_the_engines():
    rtx = trt_api.Flavour(stand_in("1.7.1.116", False, True, sm=(75, 80)), rtx=True)
    assert rtx.runs_on("8.9") is None and rtx.runs_on("12.0") is None  # measured list for 1.7 beats the enum
    assert rtx.runs_on("9.0") == ("TensorRT for RTX 1.7.1.116 engines do not run on compute capability 9.0 (they run "
                                  "on 8.0, 8.6, 8.9, 12.0, 12.1: A100 and RTX 30/40/50 GPUs); full TensorRT runs there")
    newer = trt_api.Flavour(stand_in("1.9.0.1", False, True, sm=(80, 86, 90, 120)), rtx=True)
    assert trt_api.rtx_compute_capabilities(newer.module) == ("8.0", "8.6", "9.0", "12.0")  # unmeasured: its enum
    assert newer.runs_on("9.0") is None and "8.0, 8.6, 9.0, 12.0" in newer.runs_on("7.5")
    assert trt_api.ahead_of_time_target(rtx.module) == "8.9"
    assert trt_api.ahead_of_time_target(stand_in("1.9.0.1", False, True, sm=(100, 120))) == "10.0"
    full = trt_api.Flavour(stand_in("10.9.0", True), rtx=False)
    assert full.runs_on("9.0") is None and full.runs_on("8.6") is None
    assert full.runs_on("7.0") == "TensorRT 10.9.0 needs compute capability 7.5 or newer, this GPU has 7.0"


def test_probe_tells_running_from_building(installed, monkeypatch):
    installed(tensorrt_rtx=stand_in("1.7.1.116", False, True))
    monkeypatch.setattr(backend, "_has", lambda module: module != "pycuda")
    assert backend.probe("tensorrt") == "pycuda is not installed (TensorRT for RTX 1.7.1.116 is; pip install pycuda)"
    monkeypatch.setattr(backend, "_has", lambda module: True)
    monkeypatch.setattr(backend, "cuda_device_reason", lambda index=0: None)
    monkeypatch.setattr(backend, "gpu_compute_capability", lambda index=0: "9.0")
    assert "do not run on compute capability 9.0" in backend.probe("tensorrt")
    assert backend.probe("tensorrt", build_only=True) is None  # an H200 builds TensorRT for RTX engines
    monkeypatch.setattr(backend, "gpu_compute_capability", lambda index=0: "8.6")
    assert backend.probe("tensorrt") is None
    monkeypatch.setattr(backend, "cuda_device_reason", lambda index=0: "no CUDA GPU is visible to pycuda")
    assert backend.probe("tensorrt", build_only=True) == "no CUDA GPU is visible to pycuda"


def test_the_logger_prints_and_keeps_errors_and_a_failed_build_says_what_to_do(installed, capsys):
    import enum

    mod = stand_in("1.7.1.116", False, True)
    mod.ILogger = type("ILogger", (), {"__init__": lambda self: None,
                                       "Severity": enum.IntEnum("Severity", "INTERNAL_ERROR ERROR WARNING INFO", start=0)})
    installed(tensorrt_rtx=mod)
    log = trt_api.logger()
    assert trt_api.logger() is log, "one logger per process"
    log.log(mod.ILogger.Severity.INFO, "chatter")
    log.log(mod.ILogger.Severity.WARNING, "a warning")
    log.log(mod.ILogger.Severity.ERROR, "[cudamod.cpp:31: CUDAMod] CUDA error 222 loading a module.")
    assert capsys.readouterr().err.splitlines() == [
        "[TensorRT] WARNING: a warning", "[TensorRT] ERROR: [cudamod.cpp:31: CUDAMod] CUDA error 222 loading a module."]
    assert log.errors == ["[cudamod.cpp:31: CUDAMod] CUDA error 222 loading a module."]
    hint = trt_api.build_failure_hint(log.errors, trt_api.load())
    assert "driver is too old" in hint and "pip install tensorrt-rtx-cu12-libs tensorrt-rtx-cu12-bindings" in hint
    assert trt_api.build_failure_hint(["Error Code 4: no implementation"], trt_api.load()) == (
        "TensorRT said: Error Code 4: no implementation")
    assert trt_api.build_failure_hint([], trt_api.load()) == "run with --debug to see its log"


def test_the_onnx_each_build_starts_from():
    assert [onnx_source(p, strongly_typed=False) for p in ("fp32", "fp16", "int8")] == ["fp32"] * 3
    assert [onnx_source(p, strongly_typed=True) for p in ("fp32", "fp16", "int8")] == ["fp32", "fp16", "qdq"]


# ---------------------------------------------------------------- the runtime cache (TensorRT for RTX)


class KernelCache:
    def __init__(self, accepts=True):
        self.blob, self.accepts = b"", accepts

    def deserialize(self, blob):
        if self.accepts:
            self.blob = bytes(blob)
        return self.accepts

    def serialize(self):
        return self.blob or b"kernels compiled on the first run"


class Engine:
    """Stands in for an ICudaEngine of TensorRT for RTX (runtime config, runtime cache)."""

    def __init__(self, accepts=True):
        self.caches, self.accepts = [], accepts

    def create_runtime_config(self):
        engine = self

        class Config:
            def create_runtime_cache(self):
                engine.caches.append(KernelCache(engine.accepts))
                return engine.caches[-1]

            def set_runtime_cache(self, cache):
                self.cache = cache

        return Config()

    def create_execution_context(self, config=None):
        return ("context", config)


def _rtx_backend(cache, engine):
    b = trt_backend.TensorRTBackend.__new__(trt_backend.TensorRTBackend)  # no GPU here: the engine is stood in for
    b.flavour = trt_api.Flavour(stand_in("1.7.1.116", False, True), rtx=True)
    b.cache, b.engine, b._key = cache, engine, {"network": "warp", "model": "abc", "kind": "tensorrt", "size": 256}
    b.spec = types.SimpleNamespace(name="warp")
    return b


def test_runtime_cache_is_kept_after_the_first_run_and_loaded_on_the_next_start(tmp_path):
    cache = EngineCache(tmp_path)
    first = _rtx_backend(cache, Engine())
    context = first._execution_context()
    assert context[1].cache is first._runtime_cache and cache.lookup(runtime_cache_key(first._key), ".rtcache") is None
    first._save_runtime_cache()
    first._save_runtime_cache()  # once per load
    stored = cache.lookup(runtime_cache_key(first._key), ".rtcache")
    assert stored.read_bytes() == b"kernels compiled on the first run" and len(cache.entries()) == 1
    second = _rtx_backend(cache, Engine())
    second._execution_context()
    assert second._runtime_cache.blob == b"kernels compiled on the first run" and second._runtime_cache_saved
    rejected = _rtx_backend(cache, Engine(accepts=False))  # another driver: compiled anew and stored again
    rejected._execution_context()
    assert not rejected._runtime_cache_saved


def test_runtime_cache_key_is_the_engine_key_of_another_kind():
    key = {"network": "warp", "model": "abc", "kind": "tensorrt", "trt": "rtx-1.7.1.116"}
    assert runtime_cache_key(key) == {**key, "kind": "tensorrt-runtime-cache"}


# ---------------------------------------------------------------- the fp16 export


@pytest.fixture(scope="module")
def lite_networks():
    torch.manual_seed(0)
    return model_networks(PortraitModel("lite"), 256, names=["encoder", "warp"])


def test_fp16_export_is_mixed_precision_cached_apart_and_close_to_torch(lite_networks, tmp_path):
    cache = EngineCache(tmp_path)
    for name, net in lite_networks.items():
        fp32, fp16 = cached_onnx(net, cache), cached_onnx(net, cache, "fp16")
        assert fp32 != fp16 and cached_onnx(net, cache, "fp16") == fp16  # cached apart, reused
        types_ = {i.data_type for i in onnx.load(str(fp16)).graph.initializer}
        assert onnx.TensorProto.FLOAT16 in types_, f"{name}: convolution weights are fp16"
        inputs = onnx.load(str(fp16)).graph.input
        assert {i.type.tensor_type.elem_type for i in inputs} <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT32}
        err16, err32 = check_parity(net, fp16), check_parity(net, fp32)
        assert max(err16.values()) <= FP16_PARITY_TOLERANCE, (name, err16)
        if name == "encoder":  # (an untrained warp's refinement is zero: its outputs do not show the precision)
            assert max(err16.values()) > 10 * max(err32.values()), (err16, err32)  # really reduced precision
        else:
            assert err16["grid"] < 1e-5, "sampling coordinates stay fp32"
    with pytest.raises(ValueError, match="fp32 or fp16"):
        cached_onnx(lite_networks["encoder"], cache, "int8")
