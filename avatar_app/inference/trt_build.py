"""Building TensorRT engines from the networks' ONNX exports.

Importable without TensorRT: TensorRT (through :mod:`.trt_api`, which picks ``tensorrt``
or ``tensorrt_rtx``) and ``pycuda`` (for the INT8 calibrator) are imported inside the
functions that need them.  The pure parts — cache keys, I/O checks against a
:class:`~avatar_app.inference.networks.NetworkSpec`, the calibration batcher, the choice
of ONNX source — are tested without a GPU.

Precision per TensorRT:

========  ==================================  ==========================================
          TensorRT 10 (weakly typed builds)   TensorRT 11, TensorRT for RTX (strongly
                                              typed only)
========  ==================================  ==========================================
fp32      no flags                            no flags
fp16      ``BuilderFlag.FP16``                the mixed-precision fp16 ONNX export
                                              (``export_onnx(..., "fp16")``)
int8      ``INT8`` + ``FP16`` flags and an    ONNX with explicit Q/DQ nodes (onnxruntime
          ``IInt8EntropyCalibrator2``         static quantization, symmetric int8) from
          (calibration cache in the cache)    the same calibration frames
========  ==================================  ==========================================

The analytic ``flow`` network computes pixel coordinates and is always built fp32;
INT8 applies to the convolution-heavy networks only (as in the onnxruntime backend).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import AvatarError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
FP32_NETWORKS = ("flow",)  # coordinates: reduced precision would move pixels
INT8_NETWORKS = ("warp", "generator", "enhancer")  # the rest run fp16 in an int8 build
CALIBRATION_FRAMES = 64  # at most this many frames feed the INT8 calibrator
WORKSPACE_GB = 4.0

#: TensorRT ``DataType`` member name -> numpy dtype (types our networks never use are absent)
TRT_TO_NUMPY = {"FLOAT": np.dtype(np.float32), "HALF": np.dtype(np.float16), "INT32": np.dtype(np.int32),
                "INT64": np.dtype(np.int64), "INT8": np.dtype(np.int8), "UINT8": np.dtype(np.uint8),
                "BOOL": np.dtype(np.bool_)}


class EngineBuildError(AvatarError):
    """A TensorRT engine could not be built; the message says why."""


# ---------------------------------------------------------------- keys and names


def network_precision(network: str, precision: str) -> str:
    """The precision network ``network`` is built in when ``precision`` is asked for."""
    if precision not in PRECISIONS:
        raise ValueError(f"TensorRT builds {', '.join(PRECISIONS)}, not {precision!r}")
    if network in FP32_NETWORKS:
        return "fp32"
    if precision == "int8" and network not in INT8_NETWORKS:
        return "fp16"
    return precision


def engine_key(network, precision: str, gpu_name: str, compute_capability: str, trt_version: str,
               calibration_digest: str | None = None, refit: bool = True) -> dict:
    """The cache key of ``network``'s engine: model hash, network, size, precision (as built),
    GPU name and compute capability (``"8.9"``), TensorRT version (``Flavour.key``:
    ``rtx-1.7.1.116`` for TensorRT for RTX), refittability and, for INT8 builds only, the
    calibration set's digest."""
    built = network_precision(network.name, precision)
    fields = dict(gpu=gpu_name, cc=str(compute_capability), trt=trt_version, refit=bool(refit))
    if built == "int8":
        if not calibration_digest:
            raise ValueError("an int8 engine needs a calibration set (see 'avatar-app engines calibrate')")
        fields["calib"] = calibration_digest
    return network.key("tensorrt", built, **fields)


def calibration_cache_key(key: Mapping[str, object]) -> dict:
    """The key of the INT8 calibration cache written while building the engine ``key``."""
    return {**key, "kind": "tensorrt-calibration"}


def runtime_cache_key(key: Mapping[str, object]) -> dict:
    """The key of the TensorRT for RTX runtime cache of the engine ``key``: the kernels it
    compiled for this GPU when it first ran, loaded again on the next start."""
    return {**key, "kind": "tensorrt-runtime-cache"}


def onnx_source(precision: str, strongly_typed: bool) -> str:
    """Which ONNX export a build of ``precision`` (as built) starts from: ``fp32``, ``fp16``
    (the mixed-precision export, for strongly typed fp16) or ``qdq`` (strongly typed int8)."""
    if not strongly_typed or precision == "fp32":
        return "fp32"
    return "fp16" if precision == "fp16" else "qdq"


def timing_cache_name(gpu_name: str, compute_capability: str, trt_version: str) -> str:
    """File name of the timing cache shared by all builds on one GPU model and TensorRT version."""
    safe = "".join(c if c.isalnum() else "-" for c in gpu_name).strip("-").lower()
    return f"timing-{safe}-sm{str(compute_capability).replace('.', '')}-trt{trt_version}.cache"


# ---------------------------------------------------------------- types and I/O checks


def numpy_dtype(trt_dtype) -> np.dtype:
    """The numpy dtype of a TensorRT ``DataType`` (an enum member, or its name)."""
    name = getattr(trt_dtype, "name", None) or str(trt_dtype).rsplit(".", 1)[-1]
    if name not in TRT_TO_NUMPY:
        raise TypeError(f"TensorRT type {name} has no numpy equivalent here")
    return TRT_TO_NUMPY[name]


def check_io(spec, inputs: Sequence[tuple[str, Sequence[int], object]],
             outputs: Sequence[tuple[str, Sequence[int], object]], what: str) -> None:
    """Raise :class:`EngineBuildError` unless ``inputs``/``outputs`` — ``(name, shape, dtype)``
    with TensorRT or numpy dtypes — are exactly ``spec``'s, in spec order, float32/int32."""
    got = [(name, tuple(int(d) for d in shape), _dtype(dt)) for name, shape, dt in inputs]
    want = [(t.name, tuple(t.shape), np.dtype(t.dtype)) for t in spec.inputs]
    if [g[0] for g in got] != [w[0] for w in want]:
        raise EngineBuildError(f"The {what} for {spec.name} takes inputs {[g[0] for g in got]}, but the network "
                               f"takes {[w[0] for w in want]}; rebuild it.")
    for (name, shape, dt), (_, wshape, wdt) in zip(got, want):
        if shape != wshape:
            dynamic = " (dynamic shapes are not supported)" if any(d < 0 for d in shape) else ""
            raise EngineBuildError(f"The {what} input {spec.name}.{name} has shape {shape}, "
                                   f"not {wshape}{dynamic}.")
        if dt != wdt:
            raise EngineBuildError(f"The {what} input {spec.name}.{name} is {dt}, not {wdt}.")
    names = [name for name, _, _ in outputs]
    if names != list(spec.outputs):
        raise EngineBuildError(f"The {what} for {spec.name} has outputs {names}, not {list(spec.outputs)}.")
    bad = [(name, _dtype(dt)) for name, _, dt in outputs if _dtype(dt) != np.float32]
    if bad:
        raise EngineBuildError(f"The {what} for {spec.name} has non-float32 outputs {bad}.")


def _dtype(dt) -> np.dtype:
    return dt if isinstance(dt, np.dtype) else numpy_dtype(dt) if hasattr(dt, "name") else np.dtype(dt)


def network_io(network) -> tuple[list, list]:
    """``(inputs, outputs)`` of a parsed ``INetworkDefinition`` as ``(name, shape, dtype)``."""
    ins = [network.get_input(i) for i in range(network.num_inputs)]
    outs = [network.get_output(i) for i in range(network.num_outputs)]
    return ([(t.name, tuple(t.shape), t.dtype) for t in ins], [(t.name, tuple(t.shape), t.dtype) for t in outs])


def engine_io(engine) -> tuple[list, list]:
    """``(inputs, outputs)`` of an ``ICudaEngine`` as ``(name, shape, dtype)``, in engine order."""
    from .trt_api import trt as tensorrt

    trt = tensorrt()

    ins, outs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        row = (name, tuple(engine.get_tensor_shape(name)), engine.get_tensor_dtype(name))
        (ins if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outs).append(row)
    return ins, outs


def ordered_like(spec, inputs: list, outputs: list) -> tuple[list, list]:
    """Engine I/O rows sorted into spec order (engines may list tensors in another order);
    unknown names go last, so :func:`check_io` reports them."""
    rank_in = {t.name: i for i, t in enumerate(spec.inputs)}
    rank_out = {n: i for i, n in enumerate(spec.outputs)}
    return (sorted(inputs, key=lambda r: rank_in.get(r[0], len(rank_in))),
            sorted(outputs, key=lambda r: rank_out.get(r[0], len(rank_out))))


# ---------------------------------------------------------------- calibration


class CalibrationBatches:
    """Calibration frames for one network as batch-1 host arrays, in spec input order.

    ``frames``: the network's full inputs per frame (``CalibrationSet.inputs_for``);
    every frame is checked against ``spec`` up front and at most ``limit`` are used.
    ``next()`` gives a dict of C-contiguous float32/int32 arrays, or ``None`` at the end;
    ``reset()`` starts again (TensorRT may read the set more than once).
    """

    batch_size = 1

    def __init__(self, spec, frames: Iterable[Mapping[str, np.ndarray]], limit: int = CALIBRATION_FRAMES):
        self.spec = spec
        self.names = [t.name for t in spec.inputs]
        self.frames: list[dict[str, np.ndarray]] = []
        for i, frame in enumerate(frames):
            if len(self.frames) >= limit:
                break
            try:
                spec.check(frame)
            except ValueError as exc:
                raise ValueError(f"calibration frame {i}: {exc}") from exc
            self.frames.append({t.name: np.ascontiguousarray(frame[t.name], dtype=t.dtype) for t in spec.inputs})
        if not self.frames:
            raise ValueError(f"no calibration frames for network {spec.name!r}")
        self._next = 0

    def __len__(self) -> int:
        return len(self.frames)

    def next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.frames):
            return None
        self._next += 1
        return self.frames[self._next - 1]

    def reset(self) -> None:
        self._next = 0

    def nbytes(self, name: str) -> int:
        return self.frames[0][name].nbytes


def read_cached_bytes(cache, key: Mapping[str, object], suffix: str) -> bytes | None:
    """A stored blob (calibration table, runtime cache) for ``key``, or ``None``."""
    path = cache.lookup(key, suffix)
    return path.read_bytes() if path is not None else None


def write_cached_bytes(cache, key: Mapping[str, object], suffix: str, data: bytes, describe: str) -> Path:
    """Store a blob for ``key`` (replacing an older one for the same key)."""
    old = cache.lookup(key, suffix)
    if old is not None and old.read_bytes() == bytes(data):
        return old
    if old is not None:
        cache.clean(lambda entry: entry.get("key") == dict(key))
    return cache.get_or_build(key, suffix, lambda tmp: Path(tmp).write_bytes(bytes(data)), describe=describe)


def read_calibration_cache(cache, key: Mapping[str, object]) -> bytes | None:
    """The stored calibration table for ``key`` (see :func:`calibration_cache_key`), or ``None``."""
    return read_cached_bytes(cache, key, ".calib")


def write_calibration_cache(cache, key: Mapping[str, object], data: bytes) -> Path:
    """Store a calibration table (replacing an older one for the same key)."""
    return write_cached_bytes(cache, key, ".calib", data, f"INT8 calibration table of {key.get('network')}")


def _entropy_calibrator(trt, batches: CalibrationBatches, read_cache: Callable[[], bytes | None],
                        write_cache: Callable[[bytes], object]):
    """A TensorRT 10 ``IInt8EntropyCalibrator2`` over ``batches`` (needs an active CUDA context)."""
    import pycuda.driver as cuda

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.device = {n: cuda.mem_alloc(batches.nbytes(n)) for n in batches.names}

        def get_batch_size(self):
            return batches.batch_size

        def get_batch(self, names, *_):
            batch = batches.next()
            if batch is None:
                return None
            for n in names:
                cuda.memcpy_htod(self.device[n], batch[n])
            return [int(self.device[n]) for n in names]

        def read_calibration_cache(self, *_):
            data = read_cache()
            if data:
                log.info("using the stored INT8 calibration table for %s", batches.spec.name)
            return data

        def write_calibration_cache(self, data):
            write_cache(bytes(data))

    return Calibrator()


def quantize_qdq(onnx_path: Path, out_path: Path, batches: CalibrationBatches) -> None:
    """Explicit quantization for TensorRT 11: Q/DQ nodes on convolutions and matrix products,
    symmetric int8 activations and per-channel int8 weights (what TensorRT accepts)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader:
        def get_next(self):
            return batches.next()

        def rewind(self):
            batches.reset()

    batches.reset()
    quantize_static(str(onnx_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"], per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.Entropy,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})


# ---------------------------------------------------------------- build


def _parse(trt, builder, logger, onnx_path: Path, strongly_typed: bool):
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes(), str(onnx_path)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        detail = "; ".join(f"node {e.node()}: {e.desc()}" for e in errors) or "no detail given"
        raise EngineBuildError(f"TensorRT cannot parse {Path(onnx_path).name} ({detail}).")
    return network, parser


def _load_timing_cache(config, path: Path | None):
    data = b""
    if path is not None and path.exists():
        data = path.read_bytes()
    cache = config.create_timing_cache(data)
    if cache is None and data:
        log.warning("timing cache %s is unreadable; starting a new one", path)
        cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)


def _save_timing_cache(config, path: Path | None) -> None:
    if path is None:
        return
    data = config.get_timing_cache().serialize()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(bytes(data))
    os.replace(tmp, path)


def build_engine(onnx_path: str | Path, out_path: str | Path, spec, precision: str,
                 calibration_batches: CalibrationBatches | None = None, timing_cache_path: str | Path | None = None,
                 refit: bool = True, workspace_gb: float = WORKSPACE_GB,
                 calibration_cache: tuple[Callable[[], bytes | None], Callable[[bytes], object]] | None = None,
                 flavour=None, targets: Sequence[str] = ()) -> None:
    """Build ``spec``'s engine from ``onnx_path`` and write the serialized plan to ``out_path``.

    ``precision`` is the precision as built (see :func:`network_precision`); ``onnx_path`` is
    the export :func:`onnx_source` names for it (for a strongly typed int8 build, the fp32
    export, quantized here).  ``int8`` needs ``calibration_batches``; ``calibration_cache``
    is ``(read, write)`` for the calibration table.  ``flavour``: the
    :class:`~avatar_app.inference.trt_api.Flavour` (default: the one this process uses).
    ``targets``: TensorRT for RTX only, compute capabilities (``"8.6"``) to build for instead
    of this GPU's (ahead-of-time builds on a GPU its engines do not run on).
    Run inside an active CUDA context (:func:`avatar_app.inference.trt_backend.cuda_context`).
    """
    from .trt_api import build_failure_hint, load, logger as trt_logger

    flavour = flavour or load()
    trt = flavour.module
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    timing = Path(timing_cache_path) if timing_cache_path else None
    if precision == "int8" and calibration_batches is None:
        raise ValueError("an int8 build needs calibration batches")
    logger = trt_logger()
    builder = trt.Builder(logger)
    weak = not flavour.strongly_typed
    source = onnx_path
    if onnx_source(precision, flavour.strongly_typed) == "qdq":
        source = out_path.with_suffix(".qdq.onnx")
        quantize_qdq(onnx_path, source, calibration_batches)
    try:
        network, _parser = _parse(trt, builder, logger, source, strongly_typed=not weak)
        check_io(spec, *network_io(network), what="parsed ONNX model")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
        if weak and precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if weak and precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            read, write = calibration_cache or (lambda: None, lambda data: None)
            config.int8_calibrator = _entropy_calibrator(trt, calibration_batches, read, write)
        if refit:
            config.set_flag(trt.BuilderFlag.REFIT)
        if targets:
            config.num_compute_capabilities = len(targets)
            for i, cc in enumerate(targets):
                config.set_compute_capability(getattr(trt.ComputeCapability, "SM" + cc.replace(".", "")), i)
        if flavour.rtx:
            timing = None  # TensorRT for RTX does not time tactics: its kernels are compiled at run time
        else:
            _load_timing_cache(config, timing)
        seen = len(getattr(logger, "errors", []))
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            hint = build_failure_hint(getattr(logger, "errors", [])[seen:], flavour)
            raise EngineBuildError(f"{flavour.label} could not build the {spec.name} engine ({precision}): {hint}.")
        _save_timing_cache(config, timing)
        out_path.write_bytes(bytes(plan))
    finally:
        if source != onnx_path:
            source.unlink(missing_ok=True)
