"""Inference backends: one protocol, four implementations, an explained choice.

A :class:`Backend` runs one network of :mod:`avatar_app.inference.networks`:
``load`` it, ``bind`` the inputs that stay the same for many frames (the source's
constants), then ``run`` it with the per-frame inputs.  Values going in are numpy
arrays or whatever this backend's ``run`` returned (so a chain of networks stays
on the GPU); ``to_numpy`` brings a value back to the host.

Which backend runs is chosen in :mod:`avatar_app.inference.selection`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from ..errors import DependencyError

#: ``auto`` tries each of the others in this order and says why it skipped any.
BACKEND_CHOICES: tuple[str, ...] = ("auto", "tensorrt", "torch-cuda", "onnxruntime", "torch-cpu")
AUTO_ORDER: tuple[str, ...] = BACKEND_CHOICES[1:]


class Backend(Protocol):
    name: str  # e.g. "torch-cuda"
    device: str  # e.g. "cuda:0 (NVIDIA H100), fp16" — for logs and the UI

    def load(self, network) -> None:
        """Prepare ``network`` (a :class:`~avatar_app.runtime.engines.Network`) to run."""

    def refit(self, network) -> int:
        """Run ``network``'s weights (the same network of another model, e.g. a personalized one)
        without rebuilding what can be kept; the number of weights swapped in place (0 if none)."""

    def bind(self, inputs: Mapping[str, Any]) -> None:
        """Set inputs that keep their value across :meth:`run` calls."""

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run once; inputs not given keep their bound value.  Returns every output by name."""

    def to_numpy(self, value: Any) -> np.ndarray:
        """A returned value as a float32/int32 host array."""


class BackendUnavailable(DependencyError):
    """This backend cannot run here; the message says why."""


# ---------------------------------------------------------------- availability


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cuda_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch" + (" (this torch is a CPU build)" if torch.version.cuda is None else "")
    return None


def cuda_device_reason(index: int = 0) -> str | None:
    """Why no CUDA GPU ``index`` is usable through pycuda here, or ``None`` when one is."""
    try:
        import pycuda.driver as cuda
    except ImportError:
        return "pycuda is not installed (pip install pycuda)"
    except Exception as exc:  # a pycuda built against another CUDA: say so
        return f"pycuda is installed but does not import ({exc})"
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:  # no driver, no device node
        return f"pycuda cannot initialise CUDA ({exc})"
    if count <= index:
        return "no CUDA GPU is visible to pycuda" if count == 0 else f"there is no CUDA GPU {index} ({count} found)"
    return None


def gpu_compute_capability(index: int = 0) -> str:
    """Compute capability of CUDA GPU ``index`` as ``"major.minor"`` (pycuda must work)."""
    import pycuda.driver as cuda

    cuda.init()
    major, minor = cuda.Device(index).compute_capability()
    return f"{major}.{minor}"


def probe(name: str, build_only: bool = False) -> str | None:
    """Why backend ``name`` cannot run here, or ``None`` when it can.

    ``build_only`` (TensorRT): whether engines can be *built* here, which TensorRT for RTX
    can on GPUs its engines do not run on.
    """
    if name == "tensorrt":
        from .trt_api import find

        flavour, why = find()
        if flavour is None:
            return why
        if not _has("pycuda"):
            return f"pycuda is not installed ({flavour.label} is; pip install pycuda)"
        why = cuda_device_reason()
        if why or build_only:
            return why
        return flavour.runs_on(gpu_compute_capability())
    if name == "torch-cuda":
        return _cuda_reason()
    if name == "onnxruntime":
        if not _has("onnxruntime"):
            return "onnxruntime is not installed (pip install onnxruntime)"
        if not _has("onnx"):
            return "onnx is not installed, so the networks cannot be exported for it (pip install onnx)"
        return None
    if name == "torch-cpu":
        return None if _has("torch") else "torch is not installed"
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_CHOICES)}")
