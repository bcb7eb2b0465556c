"""Which TensorRT this process runs: NVIDIA TensorRT (``tensorrt`` 10/11) or TensorRT for RTX.

TensorRT for RTX (``pip install tensorrt-rtx``, module ``tensorrt_rtx``) is NVIDIA's
TensorRT for GeForce/RTX and workstation PCs — this app's users.  Its Python API is
TensorRT's (named tensors, ``execute_async_v3``, ``Refitter``), so one code path runs
both; what differs is collected here:

* **typing**: TensorRT for RTX (and TensorRT 11) build strongly typed networks only: fp16
  comes from an fp16 ONNX export (:func:`~avatar_app.inference.export.export_onnx`), INT8
  from explicit Q/DQ nodes; there are no precision flags and no implicit calibrator.
* **kernels**: TensorRT for RTX compiles kernels for the local GPU when an engine is
  first run, and keeps them in a *runtime cache* that can be saved and loaded
  (:class:`Flavour.runtime_cache`); the engine cache stores it beside the engine.
* **GPUs**: a TensorRT for RTX engine runs only on the compute capabilities its library
  was built for (1.7: 8.0, 8.6, 8.9, 12.0, 12.1 — A100 and RTX 30/40/50; an H100/H200
  (9.0) builds engines but cannot run them).  TensorRT 10 runs on 7.5 and newer.

``$AVATAR_APP_TENSORRT`` (``tensorrt`` or ``tensorrt_rtx``) picks one when both are
installed; otherwise full TensorRT is preferred where present (it runs on data-centre
GPUs too), else TensorRT for RTX.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

ENV = "AVATAR_APP_TENSORRT"
#: module names tried for each flavour, in order (the RTX bindings wheel alone, without
#: the ``tensorrt_rtx`` front package, imports as ``tensorrt_rtx_bindings``)
MODULES = {"tensorrt": ("tensorrt",), "tensorrt_rtx": ("tensorrt_rtx", "tensorrt_rtx_bindings")}
MIN_TENSORRT_MAJOR = 10
TENSORRT_MIN_CC = (7, 5)
#: compute capabilities TensorRT for RTX engines run on, per release (from its own error
#: message on an H200: "Supported compute capabilities: 8.0 8.6 8.9 12.0 12.1")
RTX_RUNS = {"1.7": ("8.0", "8.6", "8.9", "12.0", "12.1")}
#: the one compute capability an ahead-of-time TensorRT for RTX build targets on a GPU its
#: engines do not run on (its graph compiler takes one target per engine): RTX 40 series
RTX_AHEAD_OF_TIME = "8.9"


@dataclass(frozen=True)
class Flavour:
    """One importable TensorRT: its module and what sets it apart."""

    module: Any
    rtx: bool

    @property
    def version(self) -> str:
        return str(self.module.__version__)

    @property
    def label(self) -> str:
        return f"TensorRT for RTX {self.version}" if self.rtx else f"TensorRT {self.version}"

    @property
    def key(self) -> str:
        """The engine-cache key field: engines of the two never mix."""
        return f"rtx-{self.version}" if self.rtx else self.version

    @property
    def strongly_typed(self) -> bool:
        """Whether builds take precisions from the model (no ``BuilderFlag.FP16``)."""
        return not hasattr(self.module.BuilderFlag, "FP16")

    @property
    def runtime_cache(self) -> bool:
        return hasattr(self.module, "IRuntimeCache") and hasattr(self.module.ICudaEngine, "create_runtime_config")

    def runs_on(self, cc: str) -> str | None:
        """Why this TensorRT's engines cannot run on compute capability ``cc`` (``"9.0"``), or ``None``."""
        if self.rtx:
            runs = rtx_compute_capabilities(self.module)
            if runs and cc not in runs:
                return (f"{self.label} engines do not run on compute capability {cc} (they run on "
                        f"{', '.join(runs)}: A100 and RTX 30/40/50 GPUs); full TensorRT runs there")
            return None
        major, minor = (int(x) for x in cc.split(".")[:2])
        if (major, minor) < TENSORRT_MIN_CC:
            return f"{self.label} needs compute capability 7.5 or newer, this GPU has {cc}"
        return None


def rtx_compute_capabilities(module) -> tuple[str, ...]:
    """The compute capabilities a TensorRT for RTX release runs engines on: measured per
    release (:data:`RTX_RUNS`), else what its ``ComputeCapability`` enum names."""
    version = ".".join(str(module.__version__).split(".")[:2])
    if version in RTX_RUNS:
        return RTX_RUNS[version]
    members = getattr(getattr(module, "ComputeCapability", None), "__members__", {})
    return tuple(f"{int(name[2:-1])}.{name[-1]}" for name in members if name.startswith("SM") and name[2:].isdigit())


def ahead_of_time_target(module) -> str:
    """The compute capability to build TensorRT for RTX engines for on a GPU they do not run on."""
    runs = rtx_compute_capabilities(module)
    return RTX_AHEAD_OF_TIME if RTX_AHEAD_OF_TIME in runs or not runs else runs[0]


def _import(names: tuple[str, ...]) -> tuple[Any | None, str | None]:
    """The first of ``names`` that imports, else ``(None, why)``."""
    why = None
    for name in names:
        try:
            return importlib.import_module(name), None
        except ImportError as exc:
            why = why or (None if getattr(exc, "name", None) == name else f"{name} does not import ({exc})")
        except Exception as exc:  # a broken install (missing CUDA libraries, say): say so instead of crashing
            why = why or f"{name} does not import ({exc})"
    return None, why


_FOUND: dict[str, tuple[Flavour | None, str | None]] = {}


def find(choice: str | None = None) -> tuple[Flavour | None, str | None]:
    """``(flavour, None)`` for the TensorRT to use, or ``(None, why none can be used)``.

    ``choice``: ``tensorrt`` or ``tensorrt_rtx``; default ``$AVATAR_APP_TENSORRT``, else
    whichever is installed (full TensorRT first).
    """
    choice = choice or os.environ.get(ENV) or ""
    if choice and choice not in MODULES:
        return None, f"${ENV} is {choice!r}; it can be {' or '.join(MODULES)}"
    if choice not in _FOUND:
        _FOUND[choice] = _search([choice] if choice else list(MODULES))
    return _FOUND[choice]


def _search(flavours: list[str]) -> tuple[Flavour | None, str | None]:
    problems = []
    for name in flavours:
        module, why = _import(MODULES[name])
        if module is None:
            if why:
                problems.append(why)
            continue
        flavour = Flavour(module, rtx=name == "tensorrt_rtx")
        if not flavour.rtx and int(flavour.version.split(".")[0]) < MIN_TENSORRT_MAJOR:
            problems.append(f"TensorRT {flavour.version} is too old ({MIN_TENSORRT_MAJOR} or newer is needed)")
            continue
        return flavour, None
    if problems:
        return None, "; ".join(problems)
    return None, ("TensorRT is not installed (pip install \"avatar-app[tensorrt]\" brings TensorRT for RTX and "
                  "pycuda; engines/README.md, Installing TensorRT, for full TensorRT)")


def load() -> Flavour:
    """The TensorRT to use; ``ImportError`` saying why when there is none."""
    flavour, why = find()
    if flavour is None:
        raise ImportError(why)
    return flavour


def trt():
    """The TensorRT module itself (``tensorrt`` or ``tensorrt_rtx``)."""
    return load().module


_LOGGER: dict[int, Any] = {}
#: CUDA error 222 (CUDA_ERROR_UNSUPPORTED_PTX_VERSION) while building: the library's compiler
#: emits code newer than this driver runs (measured: TensorRT for RTX 1.7.1 cu13 on driver 580
#: / CUDA 13.0; its cu12 wheels build there)
PTX_TOO_NEW = "CUDA error 222"


def logger():
    """The process's one TensorRT logger (TensorRT keeps the first it is given and warns about
    every other).  It prints warnings and errors as TensorRT's own does, and keeps the last
    errors, so a failed build can say what went wrong (:func:`build_failure_hint`)."""
    module = trt()
    if id(module) not in _LOGGER:
        class Recording(module.ILogger):
            def __init__(self):
                module.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity, msg):
                if severity <= module.ILogger.Severity.WARNING:
                    name = getattr(severity, "name", None) or str(severity).rsplit(".", 1)[-1]
                    print(f"[TensorRT] {name}: {msg}", file=sys.stderr, flush=True)
                if severity <= module.ILogger.Severity.ERROR:
                    self.errors = (self.errors + [str(msg)])[-20:]

        _LOGGER[id(module)] = Recording()
    return _LOGGER[id(module)]


def build_failure_hint(errors: list[str], flavour: Flavour) -> str:
    """What a user can do about a failed build, from TensorRT's error messages."""
    if any(PTX_TOO_NEW in e for e in errors):
        fix = ("install its CUDA 12 build instead (pip install tensorrt-rtx-cu12-libs tensorrt-rtx-cu12-bindings)"
               if flavour.rtx else "install a TensorRT built for an older CUDA")
        return (f"{flavour.label} compiled GPU code this NVIDIA driver is too old to load (CUDA error 222): "
                f"update the driver, or {fix}")
    last = next((e for e in reversed(errors) if e.strip()), "")
    return f"TensorRT said: {last.strip()[:300]}" if last else "run with --debug to see its log"
