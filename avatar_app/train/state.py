"""Saving and restoring everything a training run needs to resume exactly — without pickle.

Tensors (model, EMA and discriminator weights, optimizer moments, RNG state) go into
one ``.safetensors`` file; the rest (step, optimizer hyper-parameters) into its JSON
metadata.  Files are written to a temporary name and renamed, so an interrupted save
never destroys the previous state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import InputFileError


def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    sd = opt.state_dict()
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.state.{idx}.{name}"] = value.detach().contiguous().cpu()
            else:
                meta.setdefault(f"{prefix}.scalars", {})[f"{idx}.{name}"] = value
    meta[f"{prefix}.param_groups"] = sd["param_groups"]


def _restore_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith(prefix + ".state."):
            idx, name = key[len(prefix) + 7:].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta.get(f"{prefix}.scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta[f"{prefix}.param_groups"]})


def save_training_state(path: Path, *, step: int, modules: dict[str, torch.nn.Module],
                        optimizers: dict[str, torch.optim.Optimizer], extra: dict | None = None) -> Path:
    """Write modules' weights, optimizers and the torch RNG state to ``path`` atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {"step": step, "extra": extra or {}}
    for name, module in modules.items():
        for k, v in module.state_dict().items():
            tensors[f"{name}.{k}"] = v.detach().contiguous().cpu()
    for name, opt in optimizers.items():
        _flatten_optimizer(f"opt_{name}", opt, tensors, meta)
    tensors["rng.torch"] = torch.get_rng_state()
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={"training_state": json.dumps(meta)})
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_training_state(path: Path, *, modules: dict[str, torch.nn.Module],
                        optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    """Restore what :func:`save_training_state` wrote; returns its metadata (``step``, ``extra``)."""
    from safetensors import safe_open

    if not path.is_file():
        raise InputFileError(f"No training state at '{path}'; resume from a run folder that has saved a checkpoint.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["training_state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise InputFileError(f"Training state '{path}' cannot be read ({exc}); it is damaged.") from exc
    for name, module in modules.items():
        prefix = name + "."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, strict=True)
    for name, opt in optimizers.items():
        _restore_optimizer(f"opt_{name}", opt, tensors, meta)
    torch.set_rng_state(tensors["rng.torch"])
    return meta
