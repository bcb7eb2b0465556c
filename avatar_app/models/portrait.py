"""The whole MetaPortrait model (warp network, generator, temporal enhancer) and its checkpoints.

Checkpoints are one ``.safetensors`` file: the weights, plus string metadata holding
the format name, a format version and the model's JSON config.  Never pickle.
Loading rebuilds the model from the config and checks every key and shape,
naming exactly what does not match.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DependencyError, InputFileError
from ..files import file_sha256
from .assets import WEIGHTS_DIR
from .enhancer import TemporalEnhancer
from .flow import fill_mouth_interior
from .generator import Generator
from .warp import WarpNet, identity_grid, limit_residual

NET_SIZE = 256  # the warp network and generator work at 256; the enhancer makes 512
FORMAT_NAME = "avatar-app-portrait"
FORMAT_VERSION = 1

PRESETS: dict[str, dict] = {
    "lite": {  # for CPUs
        "warp": {"channels": 16, "levels": 3, "code_dim": 64, "resolution": 64},
        "generator": {"channels": [16, 32, 64], "top_channels": 16, "top_block": False, "hidden": 16},
        "enhancer": {"channels": 12, "blocks": 2, "neighbours": 2},
    },
    "full": {  # for GPUs
        "warp": {"channels": 32, "levels": 3, "code_dim": 128, "resolution": 128},
        "generator": {"channels": [64, 128, 256], "top_channels": 32, "top_block": True, "hidden": 64},
        "enhancer": {"channels": 32, "blocks": 4, "neighbours": 2},
    },
}


@dataclass
class SourceCode:
    """Everything per-frame inference needs from the source, computed once.

    ``image (B, 3, S, S)`` RGB [0, 1]; ``cond (B, K, S, S)``; ``identity (B, 128)``;
    ``code (B, D)`` the warp network's AdaIN code; ``features`` the generator's
    multi-scale source features.
    """

    image: torch.Tensor
    cond: torch.Tensor
    identity: torch.Tensor
    code: torch.Tensor
    features: list[torch.Tensor]


class PortraitModel(nn.Module):
    """Warp network + ID-preserving generator + temporal enhancer.

    Args:
        preset: ``"lite"`` or ``"full"`` (see :data:`PRESETS`).
        config: a full config dict (as saved in checkpoints) instead of a preset.
    """

    def __init__(self, preset: str = "full", config: dict | None = None):
        super().__init__()
        if config is None:
            if preset not in PRESETS:
                raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
            config = {"preset": preset, **copy.deepcopy(PRESETS[preset])}
        self.config = config
        self.preset = config.get("preset", "custom")
        gen = dict(config["generator"])
        gen["channels"] = tuple(gen["channels"])
        self.warp = WarpNet(**config["warp"])
        self.generator = Generator(**gen)
        self.enhancer = TemporalEnhancer(**config["enhancer"])

    def encode_source(self, image: torch.Tensor, cond: torch.Tensor, identity: torch.Tensor) -> SourceCode:
        """Prepare a source: ``image (B, 3, S, S)`` RGB, ``cond (B, K, S, S)``, ``identity (B, 128)``."""
        return SourceCode(image, cond, identity, self.warp.code(image, cond), self.generator.encode(image))

    def warp_frame(self, src: SourceCode, tgt_cond: torch.Tensor, analytic_grid: torch.Tensor,
                   mouth: torch.Tensor | None = None, mouth_coord: torch.Tensor | None = None,
                   mouth_amount: torch.Tensor | float = 0.0,
                   large_motion: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The warping half of :meth:`forward_frame`: ``grid``, ``occlusion`` and ``warped``."""
        b, s = analytic_grid.shape[0], analytic_grid.shape[1]
        ident = identity_grid(b, s, analytic_grid.device, analytic_grid.dtype)
        flow = analytic_grid.permute(0, 3, 1, 2) - ident
        residual, occlusion = self.warp(src.image, src.cond, tgt_cond, flow, code=src.code)
        if large_motion is not None:
            residual = limit_residual(residual, large_motion)
        grid = (ident + flow + residual).permute(0, 2, 3, 1)
        warped = F.grid_sample(src.image, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if mouth is not None and mouth_coord is not None:
            warped = fill_mouth_interior(warped.flip(1), mouth, mouth_coord, mouth_amount).flip(1)  # palette is BGR
        return {"grid": grid, "occlusion": occlusion, "warped": warped}

    def forward_frame(self, src: SourceCode, tgt_cond: torch.Tensor, analytic_grid: torch.Tensor,
                      mouth: torch.Tensor | None = None, mouth_coord: torch.Tensor | None = None,
                      mouth_amount: torch.Tensor | float = 0.0, large_motion: torch.Tensor | None = None,
                      hold_warp: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One frame at the network size.

        Args:
            src: :meth:`encode_source`.
            tgt_cond: ``(B, K, S, S)`` target landmark images.
            analytic_grid: ``(B, S, S, 2)`` from :class:`~avatar_app.models.flow.AnalyticFlow`.
            mouth, mouth_coord, mouth_amount: the analytic flow's mouth outputs; when
                given, the warped source gets the painted mouth interior (as the geometric
                animator does) before the generator sees it.
            large_motion: ``(B,)`` ``large_motion`` of the frame (:meth:`~.flow.AnalyticFlow.for_networks`): where it is
                above 0 the warp network's correction is bounded (:func:`~.warp.limit_residual`);
                ``None``: never.
            hold_warp: ``(B,)`` bool, training only: rows whose warp outputs reach the generator
                without a gradient, so what is learnt from those rows is the generator's alone.

        Returns:
            dict with ``image (B, 3, S, S)``, ``mask``, ``grid (B, S, S, 2)``, ``occlusion``,
            ``warped`` (the warped source the generator blended with).
        """
        out = self.warp_frame(src, tgt_cond, analytic_grid, mouth, mouth_coord, mouth_amount, large_motion)
        if hold_warp is not None:
            out = {k: torch.where(hold_warp.view(-1, *[1] * (v.dim() - 1)), v.detach(), v) for k, v in out.items()}
        image, mask = self.generator(src.features, out["grid"], out["occlusion"], tgt_cond, src.identity, out["warped"])
        return {"image": image, "mask": mask, **out}

    def parameter_count(self) -> dict[str, int]:
        return {name: sum(p.numel() for p in getattr(self, name).parameters()) for name in ("warp", "generator", "enhancer")}


def save_checkpoint(model: PortraitModel, path: str | os.PathLike, metadata: dict[str, str] | None = None,
                    dtype: torch.dtype | None = None, base: str | os.PathLike | None = None,
                    keys: list[str] | None = None) -> Path:
    """Write ``model`` to a ``.safetensors`` file atomically (temp file, fsync, rename);
    ``dtype`` (e.g. ``torch.float16``, for shipping) converts the floating-point weights.

    With ``base`` (a checkpoint) and ``keys``, only those weights are written, as a delta over
    ``base``: the file names the base (:func:`base_reference`: shipped weights by name, so the
    file moves between machines) and its SHA-256, and :func:`load_checkpoint` rebuilds the model.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    reserved = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "config": json.dumps(model.config)}
    if base is not None:
        reserved |= {"base": base_reference(base), "base_sha256": file_sha256(Path(base))}
    clash = sorted(set(metadata or {}) & set(reserved))
    if clash:
        raise ValueError(f"checkpoint metadata keys {clash} are reserved for the format")
    meta = {**(metadata or {}), **reserved}
    wanted = set(keys) if base is not None and keys is not None else None
    state = {k: v.detach().to(dtype if dtype is not None and v.is_floating_point() else v.dtype).contiguous().cpu()
             for k, v in model.state_dict().items() if wanted is None or k in wanted}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp), metadata=meta)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def base_reference(path: str | os.PathLike) -> str:
    """How a delta checkpoint names its base: ``shipped:NAME`` for weights in ``assets/weights/``
    (found there on any machine), else the file's absolute path."""
    path = Path(path).resolve()
    return f"shipped:{path.name}" if path.parent == WEIGHTS_DIR.resolve() else str(path)


def _resolve_base(path: Path, meta: dict) -> Path:
    """The base checkpoint a delta file names, checked against the SHA-256 it recorded."""
    ref = meta["base"]
    base = WEIGHTS_DIR / ref.removeprefix("shipped:") if ref.startswith("shipped:") else Path(ref)
    if not base.is_file():
        raise InputFileError(f"'{path}' holds only the weights personalization adapted, over '{ref}', which is not "
                             f"on this machine; install avatar-app with its shipped weights or copy that file there.")
    if meta.get("base_sha256") and file_sha256(base) != meta["base_sha256"]:
        raise InputFileError(f"'{path}' was adapted from other weights than the '{base}' on this machine "
                             "(their SHA-256 differs); personalize again from these weights.")
    return base


def _describe_mismatch(path: Path, expected: dict[str, torch.Size], found: dict[str, tuple]) -> str | None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [f"{k} is {tuple(found[k])} in the file but {tuple(expected[k])} in the model"
              for k in sorted(set(expected) & set(found)) if tuple(found[k]) != tuple(expected[k])]
    if not (missing or unexpected or shapes):
        return None

    def few(items: list[str]) -> str:
        return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")

    parts = []
    if missing:
        parts.append(f"missing {len(missing)} weight(s): {few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected weight(s): {few(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es): {few(shapes)}")
    return f"Checkpoint '{path}' does not fit its own model config ({'; '.join(parts)}); it was probably edited or made by an incompatible version."


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> PortraitModel:
    """Rebuild a :class:`PortraitModel` from a checkpoint, checking every key and shape."""
    try:
        from safetensors import safe_open
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise DependencyError("Loading weights needs the safetensors package; install it with 'pip install safetensors'.") from exc
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"Weights file '{path}' does not exist; check the path.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            if meta.get("format") != FORMAT_NAME:
                raise InputFileError(f"'{path}' is a safetensors file but not an avatar-app model checkpoint.")
            try:
                version = int(meta.get("format_version", "0"))
                config = json.loads(meta["config"])
            except (KeyError, ValueError) as exc:
                raise InputFileError(f"Checkpoint '{path}' has damaged metadata ({exc}); use an intact copy.") from exc
            if version > FORMAT_VERSION:
                raise InputFileError(f"Checkpoint '{path}' has format version {version}, newer than this avatar-app "
                                     f"understands ({FORMAT_VERSION}); update avatar-app.")
            try:
                model = PortraitModel(config=config)
            except (TypeError, KeyError, ValueError) as exc:
                raise InputFileError(f"Checkpoint '{path}' has a model config this version cannot build ({exc}).") from exc
            expected = {k: v.shape for k, v in model.state_dict().items()}
            if meta.get("base"):  # a delta: the base's weights, then the ones in this file
                base = load_checkpoint(_resolve_base(path, meta))
                if base.config != config:
                    raise InputFileError(f"'{path}' and its base weights describe different models.")
                model.load_state_dict(base.state_dict())
                expected = {k: v for k, v in expected.items() if k in found}
            problem = _describe_mismatch(path, expected, found)
            if problem:
                raise InputFileError(problem)
            state = {k: f.get_tensor(k) for k in found}
    except InputFileError:
        raise
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise InputFileError(f"Could not read weights from '{path}' ({exc}); the file is damaged or not a safetensors file.") from exc
    model.load_state_dict(state, strict=not meta.get("base"))
    return model.to(device).eval()
