"""The neural animator: MetaPortrait's networks in the same slot as the geometric one.

The source is prepared once (256 px network input, its landmark image, identity
embedding; the encoder's warp code and generator features are bound into the
chain).  Per frame: the mouth-fill amount on the CPU, and the target's landmark image
and triangle-id map at 256 — drawn with OpenCV on the CPU, or by the chain itself on
its device (``device_prepare``, on by default for compiled torch-cuda); then the chain of networks
(:class:`~avatar_app.inference.chain.NetworkChain`) on the chosen backend — analytic
flow, warp network, generator and, for 512 crops, the temporal enhancer with its
ring buffer of recent frames' features carried between calls.

Untrained, every network is (near-)identity by construction, so the neural avatar
equals the geometric one; trained weights come from a checkpoint.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..imaging import rgb_chw_to_bgr
from ..face.retarget import NEURAL_MOTION_LIMITS
from ..inference.chain import NetworkChain
from ..inference.chain_inputs import ChainInputs
from ..models.portrait import PortraitModel, load_checkpoint
from ..models.shipped import untrained_model
from ..types import Landmarks, SourcePortrait

log = logging.getLogger(__name__)


class NeuralAnimator:
    """Animate a source with a :class:`PortraitModel`.

    Args:
        source: the prepared source portrait (256 or 512).
        model: the networks; ``None`` loads ``weights`` or builds an untrained ``preset``.
        weights: a checkpoint path (see :func:`~avatar_app.models.portrait.load_checkpoint`).
        preset: ``lite`` or ``full`` when neither ``model`` nor ``weights`` is given.
        device: ``cpu``/``cuda``: shorthand for ``backend="torch-cpu"``/``"torch-cuda"``.
        identity: the source's 128-d identity embedding; computed with dlib when omitted.
        backend: one of :data:`~avatar_app.inference.backend.BACKEND_CHOICES` (default:
            from ``device``, else ``torch-cpu``).
        precision: ``fp32``, ``fp16``, ``bf16`` or ``int8`` (default: the backend's).
        **chain_options: passed to :class:`~avatar_app.inference.chain.NetworkChain`
            (``cache``, ``calibration``, ``compile``, ``cuda_graphs``, ``device_prepare``).
    """

    name = "neural"
    motion_limits = NEURAL_MOTION_LIMITS  # tighter yaw and zoom than the analytic flow's: what the networks learned

    def __init__(self, source: SourcePortrait, model: PortraitModel | None = None, weights: str | None = None,
                 preset: str = "lite", device: str | None = None, identity: np.ndarray | None = None,
                 backend: str | None = None, precision: str | None = None, **chain_options):
        if model is None:
            if weights:
                model = load_checkpoint(weights, "cpu")
            else:
                model = untrained_model(preset)  # the same weights every start: its engines stay cached
                log.warning("no weights given: running the untrained %s model, which reproduces the geometric "
                            "avatar", preset)
        if backend is None:  # plain eager torch on ``device`` (training and evaluation use this)
            backend = "torch-cuda" if device is not None and str(device).startswith("cuda") else "torch-cpu"
            chain_options.setdefault("compile", False)
            chain_options.setdefault("cuda_graphs", False)
        self.model = model
        self.size = source.size
        self.timings: dict[str, float] = {}
        self.chain = NetworkChain(model, self.size, backend, precision, **chain_options)
        self.backend = self.chain.name
        log.info("neural animator: %s on %s", self.chain.choice.explain(), self.chain.device)
        self._identity_override = identity
        self.set_source(source)
        t0 = time.perf_counter()  # compile / capture / allocate now, not on the first live frame
        self.animate(source.landmarks)
        self.reset()
        log.info("neural animator warmed up in %.1f s", time.perf_counter() - t0)

    def set_source(self, source: SourcePortrait, identity: np.ndarray | None = None) -> None:
        """Prepare a new source (and reset the enhancer's memory of earlier frames)."""
        if source.size != self.size:
            raise ValueError(f"source crop is {source.size}px but the animator runs at {self.size}px")
        self.source = source
        identity = identity if identity is not None else self._identity_override
        if identity is None:
            from ..models.identity import IdentityEncoder

            identity = IdentityEncoder().embed(source.crop, source.landmarks)
        self.identity = np.asarray(identity, np.float32)
        self._inputs = ChainInputs(source, self.identity)
        self.chain.set_source(*self._inputs.source)

    def set_model(self, model: PortraitModel, source: SourcePortrait | None = None) -> dict[str, int]:
        """Run other weights of the same architecture (a personalized model), and ``source`` when
        given (a profile's portrait): the backends stay loaded and are refitted in place where
        they can (torch, TensorRT: compiled code, CUDA graphs and buffers kept), re-exported where
        not (ONNX Runtime).  Returns the weights swapped in place per network."""
        if model.config != self.model.config:
            raise ValueError(f"set_model needs the same architecture ({self.model.preset}), not {model.preset}")
        swapped = self.chain.refit(model)
        self.model = model
        self.set_source(source if source is not None else self.source)
        return swapped

    def reset(self) -> None:
        """Forget earlier frames (the enhancer's ring buffer)."""
        self.chain.reset()

    def network_inputs(self, target: Landmarks) -> tuple:
        """The chain's per-frame inputs for ``target`` (landmarks in source crop px)."""
        prepare = self.chain.prepare_frame if self.chain.prepare is not None else None  # drawn on the device
        return self._inputs.frame(target, prepare)

    def animate(self, target: Landmarks) -> np.ndarray:
        """The avatar ``(S, S, 3) uint8`` BGR for target landmarks in source crop px."""
        t0 = time.perf_counter()
        inputs = self.network_inputs(target)
        t1 = time.perf_counter()
        result = rgb_chw_to_bgr(self.chain.frame_numpy(*inputs)[0])
        t2 = time.perf_counter()
        self.timings = {"prepare": (t1 - t0) * 1e3, "networks": (t2 - t1) * 1e3}
        return result
