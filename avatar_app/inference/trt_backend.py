"""The TensorRT backend: engines from the engine cache, pycuda buffers, one CUDA stream.

Runs NVIDIA TensorRT 10/11 or TensorRT for RTX through one code path (:mod:`.trt_api`
says which and what differs; TensorRT for RTX's runtime cache of JIT-compiled kernels is
kept in the engine cache beside the engine).

No torch at run time: this module imports TensorRT, pycuda and numpy only (torch is
imported lazily when an engine has to be built from the network's ONNX export, or
when :meth:`TensorRTBackend.refit` reads a personalized model's weights).

Per network: one engine, one execution context, a device buffer per input and output
(addresses set once with ``set_tensor_address``) and a pinned host buffer per tensor
for numpy transfers.  Every backend of the process shares one CUDA stream on the
device's primary context (pushed and popped around each call, so torch or another
CUDA user can share the GPU), so a chain of networks runs in order with no host sync:
``run`` returns :class:`DeviceArray` outputs (valid until that network runs again) and
the next network copies them device to device.  ``to_numpy`` is the only sync point.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .backend import BackendUnavailable, probe
from .engine_cache import CorruptEngine, EngineCache
from .trt_api import Flavour, ahead_of_time_target, load as load_tensorrt
from .trt_build import (CALIBRATION_FRAMES, WORKSPACE_GB, CalibrationBatches, EngineBuildError,
                        build_engine, calibration_cache_key, check_io, engine_io, engine_key, network_precision,
                        onnx_source, ordered_like, read_cached_bytes, read_calibration_cache, runtime_cache_key,
                        timing_cache_name, write_cached_bytes, write_calibration_cache)
from .trt_refit import RefitMismatch, refit_engine

log = logging.getLogger(__name__)

_STATE: dict[str, Any] = {}  # the process's CUDA context and stream, created on first use


# ---------------------------------------------------------------- CUDA


def _cuda_state() -> dict[str, Any]:
    """The primary context of GPU 0 (retained, not created) and the shared stream."""
    if not _STATE:
        import pycuda.driver as cuda

        cuda.init()
        device = cuda.Device(0)
        context = device.retain_primary_context()
        context.push()
        try:
            stream = cuda.Stream()
        finally:
            cuda.Context.pop()
        major, minor = device.compute_capability()
        _STATE.update(cuda=cuda, device=device, context=context, stream=stream, gpu=device.name(),
                      cc=f"{major}.{minor}")
    return _STATE


@contextlib.contextmanager
def cuda_context():
    """Make the shared context current for the duration (and restore whatever was current)."""
    state = _cuda_state()
    state["context"].push()
    try:
        yield state
    finally:
        state["cuda"].Context.pop()


class DeviceArray:
    """A tensor in GPU memory owned by a :class:`TensorRTBackend` (batch-1, C order).

    ``ptr`` is the device address; ``host`` an optional pinned buffer of the same shape
    used by :meth:`to_numpy`.  The owning backend overwrites it on its next ``run``.
    """

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype, host: np.ndarray | None = None):
        self.ptr, self.shape, self.dtype, self.host = int(ptr), tuple(shape), np.dtype(dtype), host

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def to_numpy(self) -> np.ndarray:
        """A host copy (synchronizes the stream)."""
        with cuda_context() as s:
            host = self.host if self.host is not None else np.empty(self.shape, self.dtype)
            s["cuda"].memcpy_dtoh_async(host, self.ptr, s["stream"])
            s["stream"].synchronize()
        return host.copy()

    def __repr__(self) -> str:
        return f"DeviceArray(0x{self.ptr:x}, {self.shape}, {self.dtype})"


# ---------------------------------------------------------------- backend


def _trt_logger():
    from .trt_api import logger

    return logger()


class TensorRTBackend:
    """Run one network as a TensorRT engine.

    Args:
        precision: ``fp32``, ``fp16`` or ``int8`` (the flow network is always fp32; see
            :func:`~avatar_app.inference.trt_build.network_precision`).
        calibration: a :class:`~avatar_app.inference.calibration.CalibrationSet` (int8 only).
        cache: where ONNX exports, engines, calibration tables and the timing cache live.
        refit: build refittable engines, so :meth:`refit` can swap in personalized weights.
        workspace_gb: builder workspace limit.
        build_only: only build engines (``engines build``): allowed on a GPU that cannot run
            this TensorRT's engines (TensorRT for RTX on an H100, say).
    """

    name = "tensorrt"

    def __init__(self, precision: str = "fp16", calibration=None, cache: EngineCache | None = None,
                 refit: bool = True, workspace_gb: float = WORKSPACE_GB, calibration_frames: int = CALIBRATION_FRAMES,
                 build_only: bool = False):
        reason = probe("tensorrt", build_only=build_only)
        if reason:
            raise BackendUnavailable(f"The tensorrt backend cannot {'build' if build_only else 'run'} here: {reason}.")
        network_precision("warp", precision)  # ValueError for an unknown precision
        if precision == "int8" and calibration is None:
            raise ValueError("int8 needs a calibration set (see 'avatar-app engines calibrate')")
        self.flavour: Flavour = load_tensorrt()
        self.precision, self.calibration = precision, calibration
        self.cache = cache or EngineCache()
        self.refittable, self.workspace_gb, self.calibration_frames = refit, workspace_gb, calibration_frames
        self.trt_version = self.flavour.key
        state = _cuda_state()
        self.gpu, self.cc = state["gpu"], state["cc"]
        # TensorRT for RTX on a GPU it cannot run on (building only): engines for a GPU it runs on
        self.targets = (ahead_of_time_target(self.flavour.module),) if (
            build_only and self.flavour.rtx and self.flavour.runs_on(self.cc)) else ()
        self.device = f"cuda:0 ({self.gpu}), {self.flavour.label}, {precision}"
        self.network = self.engine = None

    # ---------------------------------------------------------------- engines

    def key(self, network) -> dict:
        digest = getattr(self.calibration, "digest", None)
        cc = "+".join(self.targets) if getattr(self, "targets", ()) else self.cc
        return engine_key(network, self.precision, self.gpu, cc, self.trt_version, digest, self.refittable)

    def exported_onnx(self, network, precision: str) -> Path:
        """The cached ONNX export a ``precision`` (as built) engine of ``network`` starts from —
        the mixed fp16 export for strongly typed fp16, else the fp32 one (a strongly typed int8
        build quantizes it) — and where a refit finds weights the export derived.  Needs torch."""
        from .export import cached_onnx

        source = onnx_source(precision, self.flavour.strongly_typed)
        return cached_onnx(network, self.cache, "fp16" if source == "fp16" else "fp32")

    def _builder(self, network, key: dict):
        def build(tmp: Path) -> None:
            onnx_path = self.exported_onnx(network, key["precision"])  # torch: only when an engine must be built
            batches, calib = None, None
            if key["precision"] == "int8":
                frames = self.calibration.inputs_for(getattr(network, "model", None), network.size, network.name)
                batches = CalibrationBatches(network.spec, frames, self.calibration_frames)
                ckey = calibration_cache_key(key)
                calib = (lambda: read_calibration_cache(self.cache, ckey),
                         lambda data: write_calibration_cache(self.cache, ckey, data))
            print(f"avatar-app: building the {self.flavour.label} {key['precision']} engine for {network.name} "
                  f"(once per model and GPU; this can take minutes)", flush=True)
            with cuda_context():
                build_engine(onnx_path, tmp, network.spec, key["precision"], batches,
                             self.cache.root / timing_cache_name(self.gpu, self.cc, self.trt_version),
                             refit=self.refittable, workspace_gb=self.workspace_gb, calibration_cache=calib,
                             flavour=self.flavour, targets=self.targets)

        return build

    def _open(self, spec):
        def open_engine(path: Path):
            trt = self.flavour.module
            with cuda_context():
                runtime = trt.Runtime(_trt_logger())
                try:
                    engine = runtime.deserialize_cuda_engine(path.read_bytes())
                except Exception as exc:  # some versions raise instead of returning None
                    raise CorruptEngine(f"TensorRT cannot deserialize it ({exc})") from exc
                if engine is None:
                    raise CorruptEngine("TensorRT cannot deserialize it")
                try:
                    check_io(spec, *ordered_like(spec, *engine_io(engine)), what="cached engine")
                except EngineBuildError as exc:
                    raise CorruptEngine(str(exc)) from exc
            return runtime, engine

        return open_engine

    def engine_path(self, network) -> Path:
        """The cached engine file of ``network``, built if missing (for ``engines build``)."""
        key = self.key(network)
        return self.cache.get_or_build(key, ".engine", self._builder(network, key),
                                       describe=f"TensorRT {key['precision']} {network.name}")

    def load(self, network) -> None:
        key = self.key(network)
        self._runtime, self.engine = self.cache.load(key, ".engine", self._builder(network, key),
                                                     self._open(network.spec),
                                                     describe=f"TensorRT {key['precision']} {network.name}")
        self.network, self.spec, self.built_precision = network, network.spec, key["precision"]
        self._key = key
        self._allocate()

    def _execution_context(self):
        """The engine's execution context; with TensorRT for RTX, one whose runtime cache holds
        the kernels compiled on an earlier start (a cache this GPU or driver rejects is ignored)."""
        self._runtime_cache = None
        if not getattr(getattr(self, "flavour", None), "runtime_cache", False):
            return self.engine.create_execution_context()
        config = self.engine.create_runtime_config()
        cache = config.create_runtime_cache()
        stored = read_cached_bytes(self.cache, runtime_cache_key(self._key), ".rtcache")
        loaded = bool(stored) and bool(cache.deserialize(stored))
        if stored and not loaded:
            log.info("the stored runtime cache of %s does not fit this GPU or driver; compiling anew", self.spec.name)
        config.set_runtime_cache(cache)
        self._runtime_cache, self._runtime_cache_saved = cache, loaded
        return self.engine.create_execution_context(config)

    def _save_runtime_cache(self) -> None:
        """Keep the kernels the first run compiled (once per load; see :meth:`_execution_context`)."""
        if self._runtime_cache is None or self._runtime_cache_saved:
            return
        self._runtime_cache_saved = True
        data = self._runtime_cache.serialize()
        if data is not None and len(bytes(data)):
            write_cached_bytes(self.cache, runtime_cache_key(self._key), ".rtcache", bytes(data),
                               f"runtime cache of {self.spec.name}")

    def _allocate(self) -> None:
        """Device and pinned host buffers for every I/O tensor, addresses set once."""
        with cuda_context() as s:
            cuda = s["cuda"]
            self.context = self._execution_context()
            self._device, self._host, self.outputs = {}, {}, {}
            shapes = [(t.name, t.shape, np.dtype(t.dtype)) for t in self.spec.inputs]
            shapes += [(n, tuple(self.engine.get_tensor_shape(n)), np.dtype(np.float32)) for n in self.spec.outputs]
            for name, shape, dtype in shapes:
                host = cuda.pagelocked_empty(shape, dtype)
                self._device[name] = cuda.mem_alloc(max(host.nbytes, 1))
                self._host[name] = host
                self.context.set_tensor_address(name, int(self._device[name]))
            for n in self.spec.outputs:
                self.outputs[n] = DeviceArray(int(self._device[n]), self._host[n].shape, np.float32, self._host[n])
            self._staged = cuda.Event()  # host staging buffers may be reused once this fires
            self._staged.record(s["stream"])
        self._filled: set[str] = set()

    # ---------------------------------------------------------------- running

    def _copy_in(self, inputs: Mapping[str, Any], s: dict) -> None:
        self.spec.check(inputs, partial=True)
        cuda, stream = s["cuda"], s["stream"]
        if any(not isinstance(v, DeviceArray) for v in inputs.values()):
            self._staged.synchronize()  # the previous host-to-device copies have read the staging buffers
        for name, value in inputs.items():
            dst = self._device[name]
            if isinstance(value, DeviceArray):
                if value.ptr != int(dst):
                    cuda.memcpy_dtod_async(dst, value.ptr, value.nbytes, stream)
            else:
                host = self._host[name]
                host[...] = np.asarray(value)
                cuda.memcpy_htod_async(dst, host, stream)
            self._filled.add(name)
        self._staged.record(stream)

    def bind(self, inputs: Mapping[str, Any]) -> None:
        with cuda_context() as s:
            self._copy_in(inputs, s)

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        with cuda_context() as s:
            self._copy_in(inputs, s)
            missing = [t.name for t in self.spec.inputs if t.name not in self._filled]
            if missing:
                raise ValueError(f"network {self.spec.name!r} is missing input(s) {missing}")
            if not self.context.execute_async_v3(s["stream"].handle):
                raise RuntimeError(f"TensorRT failed to run the {self.spec.name} engine")
            if getattr(self, "_runtime_cache", None) is not None and not self._runtime_cache_saved:
                s["stream"].synchronize()  # the first run compiled its kernels: keep them for next time
                self._save_runtime_cache()
        return dict(self.outputs)

    def to_numpy(self, value: Any) -> np.ndarray:
        return value.to_numpy() if isinstance(value, DeviceArray) else np.asarray(value)

    def synchronize(self) -> None:
        with cuda_context() as s:
            s["stream"].synchronize()

    # ---------------------------------------------------------------- personalization

    def refit(self, network) -> int:
        """Swap ``network``'s weights (the same network of a personalized model) into the engine.

        Returns the number of weights refitted; when the engine cannot be refitted (not
        built refittable, an INT8 build, a weight TensorRT renamed or folded) it says why
        and rebuilds instead, returning 0.  A strongly typed fp16 engine takes its new
        weights from the personalized model's fp16 export (its initializers are fp16 and
        named by the exporter, the same in every export of one architecture).
        The refitted engine is stored in the cache under the new model's key.
        """
        from .networks import weights_of

        old, new = self.network, network
        if new.model_hash == old.model_hash:
            return 0
        try:
            count = self._refit_from(new, weights_of(new.model, old.name, old.size))
        except RefitMismatch as exc:
            print(f"avatar-app: cannot refit the {old.name} engine ({exc}); rebuilding it", flush=True)
            log.warning("refit of %s failed (%s); rebuilding", old.name, exc)
            self.load(new)
            return 0
        self.network = new
        key = self.key(new)
        self.cache.get_or_build(key, ".engine", lambda tmp: Path(tmp).write_bytes(bytes(self.engine.serialize())),
                                describe=f"TensorRT {key['precision']} {new.name} (refitted)")
        log.info("refitted %d weights of %s", count, old.name)
        return count

    def _refit_from(self, new, weights: dict[str, np.ndarray]) -> int:
        if not self.refittable:
            raise RefitMismatch("it was built without REFIT")
        if self.built_precision == "int8":
            raise RefitMismatch("its int8 weights are quantized before the build")

        def exported() -> dict[str, np.ndarray]:  # constants the export derived from the weights
            from .trt_refit import onnx_initializers

            return onnx_initializers(self.exported_onnx(new, self.built_precision))

        with cuda_context() as s:
            s["stream"].synchronize()  # nothing may run while weights change
            try:
                return refit_engine(self.engine, weights, exported, _trt_logger(), self.flavour.module)
            except RefitMismatch:
                raise
            except Exception as exc:  # TensorRT errors surface as RuntimeError/TypeError
                raise RefitMismatch(str(exc)) from exc


def build_engines(model, size: int, precision: str = "fp16", cache: EngineCache | None = None, calibration=None,
                  progress=None, **options) -> list[dict]:
    """``avatar-app engines build``: every network's engine in the cache; one row per network."""
    from .export import model_networks

    backend = TensorRTBackend(precision, calibration=calibration, cache=cache, build_only=True, **options)
    rows = []
    for net in model_networks(model, size).values():
        path = backend.engine_path(net)
        rows.append({"network": net.name, "precision": network_precision(net.name, precision), "path": str(path),
                     "bytes": path.stat().st_size})
        if progress:
            progress(rows[-1])
    return rows
