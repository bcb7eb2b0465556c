"""The portrait model cut into stateless networks with named inputs and outputs.

Every backend (torch, ONNX Runtime, TensorRT) runs the same five networks, each a
pure function of its inputs — the source's constants (its image, landmark image,
warp code, generator features, identity) are inputs too, bound once per source,
and the temporal enhancer's ring buffer goes in as ``history`` and comes back as
``history_out``.  Shapes are static (batch 1), so they export to ONNX as they are.

====================  =========================================================
``encoder`` (once)    source image + landmark image -> warp code, generator features
``flow``              source/target landmarks + target triangle ids (+ the source's
                      closed-lid lift) -> analytic grid, mouth mask, lip coordinate and
                      how far the head moved (its correction is bounded then)
``warp``              warp network: refined grid, occlusion, warped source (+ mouth)
``generator``         ID-preserving generator: image and blend mask at 256
``enhancer`` (512)    generator output + its warped source, source warped at 512 -> refined 512 image
====================  =========================================================
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..types import NUM_LANDMARKS
from ..models.conditioning import COND_CHANNELS
from ..models.flow import AnalyticFlow, fill_mouth_interior
from ..models.identity import IDENTITY_DIM
from ..models.layers import resize_grid
from ..models.portrait import NET_SIZE, PortraitModel, SourceCode

#: bump when a network's inputs, outputs or maths change: cached exports are keyed by it
NETWORKS_VERSION = 6  # 3: the flow moves the irises (gaze); 4: the enhancer's base counts the mask once;
#                       5: the flow takes the source's closed-lid lift (models/eye_lids.py); 6: the flow
#                       says how far the head moved, and the warp bounds its correction then (models/warp.py)
PER_FRAME = ("flow", "warp", "generator", "enhancer")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"  # or "int32"


@dataclass(frozen=True)
class NetworkSpec:
    """A network's interface: named, statically shaped inputs and outputs."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(f"network {self.name!r} has no input {name!r}")

    def check(self, inputs: Mapping[str, object], partial: bool = False) -> None:
        """Raise ``ValueError`` naming the first input of the wrong name, shape or dtype."""
        known = {t.name: t for t in self.inputs}
        unknown = sorted(set(inputs) - set(known))
        if unknown:
            raise ValueError(f"network {self.name!r} has no input(s) {unknown}; it takes {sorted(known)}")
        if not partial:
            missing = sorted(set(known) - set(inputs))
            if missing:
                raise ValueError(f"network {self.name!r} is missing input(s) {missing}")
        for name, value in inputs.items():
            t = known[name]
            shape = tuple(getattr(value, "shape", ()))
            if shape != t.shape:
                raise ValueError(f"{self.name}.{name} must have shape {t.shape}, got {shape}")
            dtype = str(getattr(value, "dtype", "")).replace("torch.", "")
            if t.dtype == "int32" and "int" not in dtype or t.dtype == "float32" and "float" not in dtype:
                raise ValueError(f"{self.name}.{name} must be {t.dtype}, got {dtype}")


class _Stage(nn.Module):
    """A network as a module: positional inputs in spec order, outputs as a tuple."""

    spec: NetworkSpec


class EncoderStage(_Stage):
    def __init__(self, model: PortraitModel):
        super().__init__()
        self.warp, self.generator = model.warp, model.generator

    def forward(self, source, source_cond):
        return (self.warp.code(source, source_cond), *self.generator.encode(source))


class FlowStage(_Stage):
    def __init__(self):
        super().__init__()
        self.flow = AnalyticFlow(NET_SIZE, math_dtype=torch.float32)

    def forward(self, source_xy, target_xy, tri_ids, lid_lift):
        return self.flow.for_networks(source_xy, target_xy, tri_ids.long(), lid_lift=lid_lift)


class WarpStage(_Stage):
    def __init__(self, model: PortraitModel):
        super().__init__()
        self.model = model

    def forward(self, source, source_cond, code, target_cond, analytic_grid, mouth, mouth_coord, mouth_amount,
                large_motion):
        src = SourceCode(source, source_cond, None, code, [])
        out = self.model.warp_frame(src, target_cond, analytic_grid, mouth, mouth_coord, mouth_amount, large_motion)
        return out["grid"], out["occlusion"], out["warped"]


class GeneratorStage(_Stage):
    def __init__(self, model: PortraitModel):
        super().__init__()
        self.generator = model.generator

    def forward(self, feat0, feat1, feat2, grid, occlusion, target_cond, identity, warped):
        return self.generator([feat0, feat1, feat2], grid, occlusion, target_cond, identity, warped)


class EnhancerStage(_Stage):
    """512 output: the generator's 256 output upsampled, with its warped source (``warped``, weight
    ``1 - mask`` in ``image``) swapped for the source warped at 512 with the same flow (mouth painted),
    refined by the temporal enhancer fused with ``history``; ``reset = 1`` starts the history afresh.

    So the generator's synthesis counts ``mask`` at 512 as at 256. Blending ``image``, which already is
    ``mask · synthesis + (1 − mask) · warped``, with the 512 warp by ``mask`` again counted it ``mask²``:
    where the mask is partial (the eyes: about 0.1–0.3) the 512 avatar was mostly the warp, and its
    lids moved about half as far as the 256 avatar's (docs/EYES.md, "The neural animator's eyes")."""

    def __init__(self, model: PortraitModel, size: int):
        super().__init__()
        self.enhancer, self.size = model.enhancer, size

    def forward(self, image, mask, warped, grid, mouth, mouth_coord, mouth_amount, source_full, history, reset):
        base = upscale_output(image, mask, warped, grid, mouth, mouth_coord, mouth_amount, source_full, self.size)
        enh = self.enhancer
        current = enh.features(image, base)
        fresh = current.unsqueeze(1).expand_as(history)
        history = torch.where(reset.reshape(1, 1, 1, 1, 1) > 0.5, fresh, history)  # no 0 * inf from old history
        return enh._decode(current, history, base), torch.cat([history[:, 1:], current.unsqueeze(1)], 1)


def upscale_output(image, mask, warped, grid, mouth, mouth_coord, mouth_amount, source_full, size: int):
    """The enhancer's ``base`` ``(B, 3, size, size)``: ``image`` (the generator's 256 output,
    ``mask · synthesis + (1 − mask) · warped``) upsampled, plus ``(1 − mask) · (warp at size − warped
    upsampled)``: the same picture with the warped source's detail at ``size``."""
    hw = (size, size)
    sharp = F.grid_sample(source_full, resize_grid(grid, hw), mode="bilinear", padding_mode="border",
                          align_corners=False)
    up = F.interpolate(torch.cat([mouth, mouth_coord], 1), size=hw, mode="bilinear", align_corners=False)
    sharp = fill_mouth_interior(sharp.flip(1), up[:, :1], up[:, 1:], mouth_amount).flip(1)
    low = F.interpolate(torch.cat([image, warped, mask], 1), size=hw, mode="bilinear", align_corners=False)
    return low[:, :3] + (1 - low[:, 6:]) * (sharp - low[:, 3:6])


def network_specs(model: PortraitModel, size: int = NET_SIZE) -> dict[str, NetworkSpec]:
    """The interfaces of ``model``'s networks for an avatar of ``size`` px (256 or 512)."""
    s, k = NET_SIZE, COND_CHANNELS
    with torch.no_grad():
        code, *feats = EncoderStage(model)(torch.zeros(1, 3, s, s), torch.zeros(1, k, s, s))
    img, cond = TensorSpec("source", (1, 3, s, s)), TensorSpec("source_cond", (1, k, s, s))
    tcond, amount = TensorSpec("target_cond", (1, k, s, s)), TensorSpec("mouth_amount", (1,))
    mouth, coord = TensorSpec("mouth", (1, 1, s, s)), TensorSpec("mouth_coord", (1, 1, s, s))
    grid = TensorSpec("grid", (1, s, s, 2))
    specs = {
        "encoder": NetworkSpec("encoder", (img, cond), ("code", "feat0", "feat1", "feat2")),
        "flow": NetworkSpec("flow", (TensorSpec("source_xy", (1, NUM_LANDMARKS, 2)),
                                     TensorSpec("target_xy", (1, NUM_LANDMARKS, 2)),
                                     TensorSpec("tri_ids", (1, s, s), "int32"), TensorSpec("lid_lift", (1, 2, 1))),
                            ("analytic_grid", "mouth", "mouth_coord", "large_motion")),
        "warp": NetworkSpec("warp", (img, cond, TensorSpec("code", tuple(code.shape)), tcond,
                                     TensorSpec("analytic_grid", (1, s, s, 2)), mouth, coord, amount,
                                     TensorSpec("large_motion", (1,))),
                            ("grid", "occlusion", "warped")),
        "generator": NetworkSpec("generator", tuple(TensorSpec(f"feat{i}", tuple(f.shape)) for i, f in enumerate(feats))
                                 + (grid, TensorSpec("occlusion", (1, 1, s, s)), tcond,
                                    TensorSpec("identity", (1, IDENTITY_DIM)), TensorSpec("warped", (1, 3, s, s))),
                                 ("image", "mask")),
    }
    if size != NET_SIZE:
        enh = model.enhancer
        hist = (1, enh.neighbours, enh.channels, enh.feature_size, enh.feature_size)
        specs["enhancer"] = NetworkSpec(
            "enhancer", (TensorSpec("image", (1, 3, s, s)), TensorSpec("mask", (1, 1, s, s)),
                         TensorSpec("warped", (1, 3, s, s)), grid, mouth, coord, amount,
                         TensorSpec("source_full", (1, 3, size, size)), TensorSpec("history", hist),
                         TensorSpec("reset", (1,))),
            ("output", "history_out"))
    return specs


def build_stage(model: PortraitModel, name: str, size: int = NET_SIZE) -> _Stage:
    """The torch module of network ``name`` (sharing ``model``'s weights), in eval mode."""
    stages = {"encoder": lambda: EncoderStage(model), "flow": FlowStage, "warp": lambda: WarpStage(model),
              "generator": lambda: GeneratorStage(model), "enhancer": lambda: EnhancerStage(model, size)}
    if name not in stages:
        raise KeyError(f"no network {name!r}; the networks are {sorted(stages)}")
    stage = stages[name]()
    stage.spec = network_specs(model, size)[name]
    return stage.eval()


def model_hash(model: PortraitModel) -> str:
    """Hex digest of the model's config and weights (engines built from it are keyed by it)."""
    h = hashlib.sha256(json.dumps(model.config, sort_keys=True).encode())
    h.update(f"networks-v{NETWORKS_VERSION}".encode())
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def weights_of(model: PortraitModel, name: str, size: int = NET_SIZE) -> dict[str, np.ndarray]:
    """Network ``name``'s float weights by state-dict name (what a TensorRT refit replaces)."""
    stage = build_stage(copy.deepcopy(model).to("cpu"), name, size)  # the caller's model keeps its device and mode
    return {k: v.detach().to(torch.float32).numpy() for k, v in stage.state_dict().items() if v.is_floating_point()}


def example_inputs(spec: NetworkSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible random inputs (for exports, parity checks and timing)."""
    rng = np.random.default_rng(seed)
    if spec.name == "flow":  # the analytic flow wants faces, not noise
        from ..capture.synthetic import FacePose, synthetic_landmarks
        from ..face.mesh import topology
        from ..models.flow import rasterize_triangles

        s = NET_SIZE
        pose = FacePose(yaw=float(rng.uniform(-20, 20)), pitch=float(rng.uniform(-10, 10)), jaw=float(rng.uniform(0, 1)),
                        blink_left=float(rng.uniform(0.7, 1)), blink_right=float(rng.uniform(0, 1)))  # lid_lift counts
        src = synthetic_landmarks(FacePose(), (s, s), 60).points
        tgt = synthetic_landmarks(pose, (s, s), 60).points
        ids = rasterize_triangles(tgt, topology().triangles, s).astype(np.int32)
        return {"source_xy": src[None, :, :2].astype(np.float32), "target_xy": tgt[None, :, :2].astype(np.float32),
                "tri_ids": ids[None], "lid_lift": rng.uniform(0, 0.25, size=(1, 2, 1)).astype(np.float32)}
    out = {}
    for t in spec.inputs:
        if t.dtype == "int32":
            out[t.name] = rng.integers(-1, 800, size=t.shape).astype(np.int32)
        elif t.name.endswith("_xy"):
            out[t.name] = rng.uniform(40, 216, size=t.shape).astype(np.float32)
        elif "grid" in t.name:
            out[t.name] = rng.uniform(-1, 1, size=t.shape).astype(np.float32)
        elif t.name in ("mouth_amount", "reset"):
            value = 0.5 if t.name == "mouth_amount" else float(seed % 2 == 0)  # odd seeds: history is used
            out[t.name] = np.full(t.shape, value, np.float32)
        elif t.name in ("identity", "code") or t.name.startswith("feat") or t.name == "history":
            out[t.name] = rng.standard_normal(t.shape).astype(np.float32) * 0.5
        else:
            out[t.name] = rng.uniform(0, 1, size=t.shape).astype(np.float32)
    return out
