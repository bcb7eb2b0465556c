"""A training run's checkpoint files in its folder, written after a run's steps and read to resume it.

``model.safetensors`` (the EMA weights, what the app loads), ``model_fp16.safetensors`` (the same in fp16),
``raw.safetensors`` (the weights the optimizer moves) and ``training_state.safetensors`` (the EMA and
discriminator weights, the optimizers, the grad scaler, the RNG and the run's length: :mod:`.state`).
"""

from __future__ import annotations

import logging

import torch

from ..models.portrait import load_checkpoint, save_checkpoint
from .state import load_training_state, save_training_state

log = logging.getLogger(__name__)


def _state_parts(trainer) -> tuple[dict, dict]:
    """The modules and optimizers a training state holds."""
    return ({"ema": trainer.ema} | ({"disc": trainer.disc} if trainer.disc is not None else {}),
            {"g": trainer.opt} | ({"d": trainer.opt_d} if trainer.opt_d is not None else {}))


def save_run(trainer) -> None:
    """Write ``trainer``'s checkpoint files into its ``run_dir``."""
    folder, meta = trainer.run_dir, {"step": str(trainer.step), "stage": trainer.cfg.stage}
    save_checkpoint(trainer.ema, folder / "model.safetensors", meta)
    save_checkpoint(trainer.ema, folder / "model_fp16.safetensors", meta, torch.float16)
    save_checkpoint(trainer.model, folder / "raw.safetensors", meta)
    modules, optimizers = _state_parts(trainer)
    save_training_state(folder / "training_state.safetensors", step=trainer.step, modules=modules,
                        optimizers=optimizers, extra={"scaler": trainer.scaler.state_dict(), "steps": trainer.cfg.steps})


def resume_run(trainer) -> None:
    """Restore ``trainer`` from the checkpoint files in its ``run_dir`` (weights, optimizers, step, RNG, length)."""
    raw = load_checkpoint(trainer.run_dir / "raw.safetensors", trainer.device)
    trainer.model.load_state_dict(raw.state_dict())
    modules, optimizers = _state_parts(trainer)
    meta = load_training_state(trainer.run_dir / "training_state.safetensors", modules=modules, optimizers=optimizers)
    trainer.step = int(meta["step"])
    if meta["extra"].get("scaler"):
        trainer.scaler.load_state_dict(meta["extra"]["scaler"])
    saved = int(meta["extra"].get("steps") or 0)
    if saved and trainer.cfg.time_budget_s > 0:  # the budget already chose the length
        trainer.cfg.steps, trainer._resumed = saved, True
    elif saved and saved != trainer.cfg.steps:  # e.g. resumed without the budget or the steps it ran with
        log.warning("this run was saved to train to step %d; it now trains to %d", saved, trainer.cfg.steps)
