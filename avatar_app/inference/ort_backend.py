"""The ONNX Runtime backend: CPU by default, the CUDA/DirectML/CoreML providers when present,
and an INT8 (static quantization) variant for CPUs.

Networks come from the engine cache: exported to ONNX (and parity-checked) on first
use, quantized on first use of ``precision="int8"`` from a calibration set
(:mod:`avatar_app.inference.calibration`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .backend import BackendUnavailable
from .engine_cache import EngineCache
from .export import cached_onnx, onnx_session

log = logging.getLogger(__name__)

#: accelerated providers, best first; the CPU provider is always last
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider")
INT8_NETWORKS = ("warp", "generator", "enhancer")  # the convolution-heavy ones; flow and encoder stay fp32


def providers(use_accelerators: bool = True) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    chosen = [p for p in PREFERRED_PROVIDERS if use_accelerators and p in available]
    return chosen + ["CPUExecutionProvider"]


class OrtBackend:
    """Run one network with ONNX Runtime.

    Args:
        precision: ``fp32`` or ``int8`` (CPU static quantization; needs ``calibration``).
        calibration: a :class:`~avatar_app.inference.calibration.CalibrationSet` for int8.
        cache: where exports and quantized models are kept.
        threads: intra-op threads (default: ONNX Runtime's choice).
        use_accelerators: try the CUDA/DirectML/CoreML providers when installed.
    """

    name = "onnxruntime"

    def __init__(self, precision: str = "fp32", calibration=None, cache: EngineCache | None = None,
                 threads: int | None = None, use_accelerators: bool = True):
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable("The onnxruntime backend needs onnxruntime; install it with "
                                     "'pip install onnxruntime'.") from exc
        if precision not in ("fp32", "int8"):
            raise ValueError(f"onnxruntime runs fp32 or int8, not {precision!r}")
        if precision == "int8" and calibration is None:
            raise ValueError("int8 needs a calibration set (see 'avatar-app engines calibrate')")
        self.precision = precision
        self.calibration = calibration
        self.cache = cache or EngineCache()
        self.threads = threads or int(os.environ.get("AVATAR_APP_ORT_THREADS", "0")) or None
        self.providers = providers(use_accelerators and precision == "fp32")
        self.device = f"{self.providers[0].replace('ExecutionProvider', '')}, {precision}"

    def load(self, network) -> None:
        self.network = network
        self.spec = network.spec
        path = cached_onnx(network, self.cache)
        if self.precision == "int8" and network.name in INT8_NETWORKS:
            from .int8 import cached_int8

            path = cached_int8(network, path, self.calibration, self.cache)
        self.path = path
        self.session = onnx_session(path, self.threads, self.providers)
        used = self.session.get_providers()[0].replace("ExecutionProvider", "")  # after any fallback
        self.device = f"{used}, {self.precision}"
        self._bound: dict[str, np.ndarray] = {}

    def refit(self, network) -> int:
        """Run ``network`` (the same network of a personalized model): a new export, cached
        under the new model's hash; bound inputs are kept."""
        bound = self._bound
        self.load(network)
        self._bound = bound
        return 0

    def _convert(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        self.spec.check(inputs, partial=True)
        out = {}
        for name, value in inputs.items():
            dtype = np.int32 if self.spec.input(name).dtype == "int32" else np.float32
            out[name] = np.ascontiguousarray(np.asarray(value), dtype=dtype)
        return out

    def bind(self, inputs: Mapping[str, Any]) -> None:
        self._bound.update(self._convert(inputs))

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        feeds = {**self._bound, **self._convert(inputs)}
        missing = [t.name for t in self.spec.inputs if t.name not in feeds]
        if missing:
            raise ValueError(f"network {self.spec.name!r} is missing input(s) {missing}")
        return dict(zip(self.spec.outputs, self.session.run(None, feeds)))

    def to_numpy(self, value: Any) -> np.ndarray:
        return np.asarray(value)

    def synchronize(self) -> None:
        pass
