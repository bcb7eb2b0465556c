"""``avatar-app train``: one stage of training, on one device or many (torchrun)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def add_train_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train the warp network, the full model or the enhancer on a prepared dataset")
    p.add_argument("--stage", required=True, choices=("warp", "full", "enhancer"))
    p.add_argument("--data", required=True, metavar="PREPARED", help="a folder written by `avatar-app prepare`")
    p.add_argument("--config", metavar="FILE", help="a TOML file of TrainConfig settings")
    p.add_argument("--out", metavar="RUN", help="run folder (default runs/<stage>)")
    p.add_argument("--steps", type=int, help="total steps (overrides the config)")
    p.add_argument("--batch-size", type=int, help="samples per step and device (overrides the config)")
    p.add_argument("--preset", choices=("lite", "full"), help="model preset (overrides the config)")
    p.add_argument("--init-weights", metavar="PATH", help="start from this checkpoint (e.g. the warp stage's)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true")
    return p


def run_train(args) -> int:
    import torch
    import torch.distributed as dist

    from .config import TrainConfig

    cfg = TrainConfig.load(args.config, stage=args.stage, steps=args.steps, batch_size=args.batch_size,
                           preset=args.preset, init_weights=args.init_weights)
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and world > 1:
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    out = Path(args.out or Path("runs") / cfg.stage)
    try:
        from .trainer import Trainer

        trainer = Trainer(cfg, out, data=args.data, device=device)
        if args.resume:
            trainer.resume()
        trainer.fit(progress=not args.no_progress)
        if int(os.environ.get("RANK", 0)) == 0:
            print(f"trained {cfg.stage} to step {trainer.step}; weights: {out / 'model.safetensors'} "
                  f"(metrics in {out / 'metrics.jsonl'})")
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0
