"""The per-frame chain of networks on one backend: flow -> warp -> generator (-> enhancer).

:class:`NetworkChain` owns one :class:`~avatar_app.inference.backend.Backend` per
network, binds the source's constants once (:meth:`set_source`) and runs a frame
from the CPU-side inputs (target landmark image, landmarks, triangle ids, mouth
amount) to the avatar.  Values pass between networks in the backend's own form, so a
GPU chain never round-trips through the host until the final image.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from ..errors import AvatarError, UsageError
from ..models.portrait import NET_SIZE, PortraitModel
from ..types import NUM_LANDMARKS
from .backend import Backend
from .selection import Choice, choose_backend
from .engine_cache import EngineCache
from .export import Network, model_networks
from .networks import NetworkSpec, TensorSpec

log = logging.getLogger(__name__)


#: what each backend can run
PRECISIONS = {"tensorrt": ("fp32", "fp16", "int8"), "torch-cuda": ("fp32", "fp16", "bf16"),
              "onnxruntime": ("fp32", "int8"), "torch-cpu": ("fp32", "fp16", "bf16")}


def default_precision(backend: str) -> str:
    return "fp16" if backend in ("tensorrt", "torch-cuda") else "fp32"


def make_backend(name: str, precision: str | None = None, cache: EngineCache | None = None, calibration=None,
                 compile: bool | None = None, cuda_graphs: bool | None = None, **extra) -> Callable[[], Backend]:
    """A factory of backends ``name`` (one instance per network) with these options."""
    precision = precision or default_precision(name)
    if precision not in PRECISIONS.get(name, (precision,)):
        runs = [b for b, p in PRECISIONS.items() if precision in p]
        raise UsageError(f"The {name} backend runs {', '.join(PRECISIONS[name])}, not {precision}; "
                          f"{precision} runs on {' or '.join(runs) or 'no backend'} (--backend).")
    if name in ("torch-cpu", "torch-cuda"):
        from .torch_backend import TorchBackend

        gpu = name == "torch-cuda"
        options = dict(device="cuda" if gpu else "cpu", precision=precision,
                       compile=gpu if compile is None else compile,
                       cuda_graphs=gpu if cuda_graphs is None else cuda_graphs, channels_last=gpu, **extra)
        TorchBackend(**options)  # fail now (no GPU, bad precision), not per network
        return lambda: TorchBackend(**options)
    if name == "onnxruntime":
        from .ort_backend import OrtBackend

        OrtBackend(precision, calibration, cache, **extra)
        return lambda: OrtBackend(precision, calibration, cache, **extra)
    if name == "tensorrt":
        from .trt_backend import TensorRTBackend

        TensorRTBackend(precision, calibration=calibration, cache=cache, **extra)  # fail now, not per network
        return lambda: TensorRTBackend(precision, calibration=calibration, cache=cache, **extra)
    raise ValueError(f"unknown backend {name!r}")


def prepare_on_device(backend: str, requested: bool | None, options: dict) -> bool:
    """Whether a chain draws each frame's landmark image and triangle ids itself.

    ``requested`` ``None`` (auto): on torch-cuda when it compiles or captures CUDA graphs
    (the live configuration), where the drawing joins the networks' graphs and frees the
    CPU; elsewhere OpenCV on the CPU is much faster than torch there (``tools/bench_prepare.py``).
    Eager torch-cuda (training, evaluation) keeps the CPU drawing the networks were trained on.
    """
    torch_backend = backend in ("torch-cpu", "torch-cuda")
    if requested and not torch_backend:
        raise AvatarError(f"The {backend} backend takes the landmark image and triangle ids from the CPU; "
                          "drawing them on the device needs a torch backend (--backend torch-cuda).")
    if requested is not None:
        return requested
    return backend == "torch-cuda" and bool(options.get("compile", True) or options.get("cuda_graphs", True))


def _prepare_network() -> Network:
    """The per-frame drawing (:class:`~avatar_app.models.frame_inputs.FrameInputs`) as a network."""
    from ..models.frame_inputs import FrameInputs

    spec = NetworkSpec("prepare", (TensorSpec("target_points", (1, NUM_LANDMARKS, 3)),), ("target_cond", "tri_ids"))
    return Network(spec, FrameInputs(NET_SIZE).eval(), "", NET_SIZE, None)


class NetworkChain:
    """``model``'s networks for ``size`` px avatars on backend ``backend`` (or ``auto``).

    ``record``: a dict that receives every network's full inputs per run (numpy), for
    calibration sets.  ``device_prepare``: draw each frame's inputs on the device
    (:meth:`prepare_frame`; ``None``: see :func:`prepare_on_device`).
    """

    def __init__(self, model: PortraitModel, size: int = NET_SIZE, backend: str = "auto",
                 precision: str | None = None, cache: EngineCache | None = None, calibration=None,
                 record: dict | None = None, device_prepare: bool | None = None, **options):
        self.choice: Choice = choose_backend(backend)
        if self.choice.rejected:
            log.warning("%s", self.choice.explain())
        factory = make_backend(self.choice.name, precision, cache, calibration, **options)
        self.size = size
        self.networks = model_networks(model, size)
        self.backends: dict[str, Backend] = {}
        for name, net in self.networks.items():
            b = factory()
            b.load(net)
            self.backends[name] = b
        self.name = self.choice.name
        self.device = self.backends["flow"].device  # every chain has a flow network
        self.prepare: Backend | None = None
        if prepare_on_device(self.name, device_prepare, options):
            self.prepare = factory()
            self.prepare.load(_prepare_network())
        self.record = record
        self._bound: dict[str, dict] = {n: {} for n in self.networks}
        self.timings: dict[str, float] = {}
        self.sync_timings = False  # synchronize after each network, for per-network figures

    # ---------------------------------------------------------------- helpers

    def _bind(self, name: str, inputs: dict) -> None:
        self.backends[name].bind(inputs)
        if self.record is not None:
            self._bound[name].update({k: self.backends[name].to_numpy(v) for k, v in inputs.items()})

    def _run(self, name: str, inputs: dict) -> dict:
        b = self.backends[name]
        if self.record is not None:  # before running: backends may reuse buffers for outputs
            full = {**self._bound[name], **{k: b.to_numpy(v).copy() for k, v in inputs.items()}}
            self.record.setdefault(name, []).append(full)
        t0 = time.perf_counter()
        out = b.run(inputs)
        if self.sync_timings:
            b.synchronize()
            self.timings[name] = (time.perf_counter() - t0) * 1e3
        return out

    # ---------------------------------------------------------------- API

    def set_source(self, image: np.ndarray, cond: np.ndarray, identity: np.ndarray, points_xy: np.ndarray,
                   full: np.ndarray | None = None, lid_lift: np.ndarray | None = None) -> None:
        """Bind a source: ``image (1, 3, 256, 256)`` RGB [0, 1], ``cond (1, 6, 256, 256)``,
        ``identity (1, 128)``, ``points_xy (1, 478, 2)`` at 256; ``full (1, 3, S, S)`` for 512;
        ``lid_lift (1, 2, 1)`` its :func:`~avatar_app.models.eye_lids.closed_lid_lift` (default 0)."""
        enc = self._run("encoder", {"source": image, "source_cond": cond})
        lift = np.zeros((1, 2, 1), np.float32) if lid_lift is None else lid_lift
        self._bind("flow", {"source_xy": points_xy, "lid_lift": lift})
        self._bind("warp", {"source": image, "source_cond": cond, "code": enc["code"]})
        self._bind("generator", {"feat0": enc["feat0"], "feat1": enc["feat1"], "feat2": enc["feat2"],
                                 "identity": identity})
        if "enhancer" in self.backends:
            if full is None:
                raise ValueError(f"a {self.size}px chain needs the source at {self.size}px")
            spec = self.networks["enhancer"].spec
            self._bind("enhancer", {"source_full": full,
                                    "history": np.zeros(spec.input("history").shape, np.float32)})
        self.reset()

    def refit(self, model: PortraitModel) -> dict[str, int]:
        """Swap in ``model``'s weights (e.g. a personalized copy) without rebuilding what
        can be refitted; rebind the source with :meth:`set_source` afterwards."""
        self.reset()  # the history belongs to the old weights (and maybe to freed buffers)
        self.networks = model_networks(model, self.size)  # one CPU copy and hash for every backend
        return {name: b.refit(self.networks[name]) for name, b in self.backends.items()}

    def reset(self) -> None:
        """Forget earlier frames (the enhancer starts its history afresh)."""
        self._history = None

    def prepare_frame(self, points: np.ndarray):
        """``(target_cond, tri_ids)`` for :meth:`frame`, drawn on the device from
        ``points (1, 478, 3)`` float32 px at 256 (chains with :attr:`prepare` only)."""
        out = self.prepare.run({"target_points": points})
        return out["target_cond"], out["tri_ids"]

    def frame(self, target_cond: np.ndarray, target_xy: np.ndarray, tri_ids: np.ndarray, amount: float):
        """One frame; the avatar ``(1, 3, S, S)`` RGB [0, 1] in the backend's own form."""
        amount_arr = np.array([amount], np.float32)
        f = self._run("flow", {"target_xy": target_xy, "tri_ids": tri_ids})
        w = self._run("warp", {"target_cond": target_cond, "analytic_grid": f["analytic_grid"], "mouth": f["mouth"],
                               "mouth_coord": f["mouth_coord"], "mouth_amount": amount_arr,
                               "large_motion": f["large_motion"]})
        g = self._run("generator", {"grid": w["grid"], "occlusion": w["occlusion"], "target_cond": target_cond,
                                    "warped": w["warped"]})
        if "enhancer" not in self.backends:
            return g["image"], self.backends["generator"]
        inputs = {"image": g["image"], "mask": g["mask"], "warped": w["warped"], "grid": w["grid"], "mouth": f["mouth"],
                  "mouth_coord": f["mouth_coord"], "mouth_amount": amount_arr,
                  "reset": np.array([1.0 if self._history is None else 0.0], np.float32)}
        if self._history is not None:
            inputs["history"] = self._history
        e = self._run("enhancer", inputs)
        self._history = e["history_out"]
        return e["output"], self.backends["enhancer"]

    def frame_numpy(self, *args) -> np.ndarray:
        value, backend = self.frame(*args)
        return backend.to_numpy(value)
