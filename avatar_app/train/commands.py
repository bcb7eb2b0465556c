"""The training package's commands: ``avatar-app prepare`` (videos or portraits → a prepared
dataset), ``train`` (one stage, on one device or many under torchrun) and ``personalize``.

Parsers and runners only; the work is :mod:`.prepare` / :mod:`.synthetic`, :mod:`.trainer` /
:mod:`.meta` and :mod:`.personalize`'s, imported when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..errors import NoFaceError
from .clipio import SIZES

log = logging.getLogger(__name__)


def add_prepare_parser(sub) -> argparse.ArgumentParser:
    """Add ``prepare`` to the CLI's subparsers; returns the new parser."""
    p = sub.add_parser(
        "prepare", help="turn videos (or portraits, with --synthetic) into a training dataset",
        description="Track every frame of the videos or frame folders in SRC (laid out as PERSON/CLIP.mp4 or "
                    "PERSON/CLIP/000.jpg ...) and write aligned face crops, landmarks and identity embeddings to OUT "
                    "(see docs/DATASET.md). Re-running resumes: complete clips are not prepared again.")
    p.add_argument("src", metavar="SRC", help="folder of videos / frame folders, or one video "
                                              "(with --synthetic: a portrait image or a folder of portraits)")
    p.add_argument("out", metavar="OUT", help="folder to write the prepared dataset to")
    p.add_argument("--sizes", type=int, nargs="+", choices=SIZES, default=[256],
                   help="crop sizes to write (default 256; 512 is needed for the temporal enhancer)")
    p.add_argument("--workers", type=int, default=2, help="clips prepared in parallel (default 2)")
    p.add_argument("--people", metavar="FILE.tsv", default=None,
                   help="who each clip shows, for a split by person when the videos are not in one folder per "
                        "person: a tab-separated file with 'file' and 'person' columns (or person=TAG in 'notes')")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="use at most N frames of each clip")
    p.add_argument("--min-frames", type=int, default=8, metavar="N",
                   help="skip clips with fewer than N frames showing a face (default 8)")
    p.add_argument("--min-valid", type=float, default=0.5, metavar="F",
                   help="skip clips where a face shows in less than this fraction of frames (default 0.5)")
    p.add_argument("--synthetic", action="store_true",
                   help="animate still portraits instead (teaches geometry only)")
    p.add_argument("--clips-per-portrait", type=int, default=4, metavar="N", help="with --synthetic (default 4)")
    p.add_argument("--frames", type=int, default=48, metavar="N", help="with --synthetic: frames per clip (default 48)")
    p.add_argument("--seed", type=int, default=0, help="with --synthetic: random seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run_prepare(args) -> int:
    """Run ``avatar-app prepare`` from parsed arguments; prints a one-line summary."""
    from .prepare import prepare_dataset
    from .synthetic import generate_synthetic_dataset

    if args.synthetic:
        report = generate_synthetic_dataset(Path(args.src), Path(args.out), clips_per_portrait=args.clips_per_portrait,
                                            frames=args.frames, sizes=args.sizes, seed=args.seed,
                                            progress=not args.no_progress)
    else:
        report = prepare_dataset(Path(args.src), Path(args.out), sizes=args.sizes, workers=args.workers,
                                 min_valid=getattr(args, "min_valid", 0.5), min_frames=getattr(args, "min_frames", 8),
                                 max_frames=args.max_frames, progress=not args.no_progress,
                                 people=getattr(args, "people", None))
    print(report.summary())
    for note in report.notes:
        print(f"avatar-app: note: {note}", file=sys.stderr)
    total = len(report.clips_done) + len(report.clips_already_done)
    if total == 0:
        raise NoFaceError(f"No clip could be prepared ({len(report.clips_skipped)} skipped); see "
                          f"{report.report_path} for the reasons.")
    return 0



def add_train_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train the warp network, the full model or the enhancer on a prepared dataset")
    p.add_argument("--stage", required=True, choices=("warp", "full", "enhancer", "meta"),
                   help="meta: Reptile over identities, the initialisation personalization starts from")
    p.add_argument("--data", required=True, metavar="PREPARED", help="a folder written by `avatar-app prepare`")
    p.add_argument("--config", metavar="FILE", help="a TOML file of TrainConfig settings")
    p.add_argument("--out", metavar="RUN", help="run folder (default runs/<stage>)")
    p.add_argument("--steps", type=int, help="total steps (overrides the config)")
    p.add_argument("--batch-size", type=int, help="samples per step and device (overrides the config)")
    p.add_argument("--preset", choices=("lite", "full"), help="model preset (overrides the config)")
    p.add_argument("--init-weights", metavar="PATH", help="start from this checkpoint (e.g. the warp stage's)")
    p.add_argument("--time-budget", type=float, metavar="S",
                   help="train for about this many seconds: steps are set from the speed of the first steps")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one config setting (TOML value), e.g. --set w_gan=0.3; repeatable")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--stop-after", type=_seconds, default=0.0, metavar="S",
                   help="train a share of the run: checkpoint and stop after about this many seconds (the "
                        "run's length and schedule stay; --resume continues it)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _seconds(text: str) -> float:
    """A number of seconds, 0 or more (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"seconds must be 0 or more, not {text}")
    return value


def rank_placement(device: str, world: int, local_rank: int, local_world: int | None, gpus: int) -> tuple[str, str]:
    """``(device, backend)`` of one torchrun rank.  On ``"cuda"`` with several ranks each rank takes GPU
    ``local_rank`` mod ``gpus``, so more ranks than GPUs (``local_world``: the ranks on this machine; None: not known,
    taken as one a GPU) share them in turn, e.g. several small lite meta-learning tasks on one GPU (three ranks on one
    H200 read 115 samples/s beside a second such run, where one rank of a different run alone had read 43:
    docs/PERSONALIZATION_PLATEAU.md).  NCCL refuses two ranks on one GPU, so ranks that share average through gloo;
    one rank a GPU, or a GPU named (``cuda:N``), keeps NCCL; the CPU uses gloo."""
    if world <= 1 or not device.startswith("cuda"):
        return device, "gloo"
    if device != "cuda":  # a GPU named on the command line: as before, NCCL
        return device, "nccl"
    if gpus < 1:
        raise RuntimeError("--device cuda with several ranks, but torch sees no CUDA GPU")
    shared = local_world is not None and local_world > gpus
    return f"cuda:{local_rank % gpus}", "gloo" if shared else "nccl"


def run_train(args) -> int:
    import torch
    import torch.distributed as dist

    from .config import TrainConfig

    named = dict(stage=args.stage, steps=args.steps, batch_size=args.batch_size, preset=args.preset,
                 init_weights=args.init_weights, time_budget_s=getattr(args, "time_budget", None))
    settings = TrainConfig.parse_settings(getattr(args, "set", None))
    cfg = TrainConfig.load(args.config, **{**settings, **{k: v for k, v in named.items() if v is not None}})
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    local_world = int(os.environ["LOCAL_WORLD_SIZE"]) if "LOCAL_WORLD_SIZE" in os.environ else None
    device, backend = rank_placement(device, world, local_rank, local_world, gpus)
    if device.startswith("cuda:"):
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend)
    out = Path(args.out or Path("runs") / cfg.stage)
    try:
        if cfg.stage == "meta":
            from .meta import MetaTrainer as Trainer
        else:
            from .trainer import Trainer
        trainer = Trainer(cfg, out, data=args.data, device=device)
        if args.resume:
            trainer.resume()
        trainer.fit(progress=not args.no_progress, stop_after_s=args.stop_after)
        if int(os.environ.get("RANK", 0)) == 0:
            rate = getattr(trainer, "samples_per_s", None)
            short = f" of {trainer.cfg.steps} (continue with --resume)" if trainer.step < trainer.cfg.steps else ""
            print(f"trained {cfg.stage} to step {trainer.step}{short}; weights: {out / 'model.safetensors'} "
                  f"(metrics in {out / 'metrics.jsonl'})"
                  + (f"; {rate:.0f} samples/s after warm-up" if rate else ""))
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0


def add_personalize_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("personalize", help="adapt the model to you in about 30 s and save a profile")
    p.add_argument("name", help="profile name")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--clip", metavar="VIDEO", help="a video of you talking and turning a little (about 10 s)")
    g.add_argument("--record", type=float, metavar="SECONDS", help="record this many seconds from the camera")
    p.add_argument("--camera", default="0", metavar="N", help="camera for --record (default 0)")
    p.add_argument("--budget", type=float, default=30.0, metavar="S", help="seconds of adaptation (default 30)")
    p.add_argument("--weights", metavar="W", help="weights to start from (default: the shipped real-trained weights "
                   "of --preset; the untrained model where none are installed)")
    p.add_argument("--preset", choices=("lite", "full"), default=None,
                   help="model size without --weights (default: full on a CUDA GPU, else lite)")
    p.add_argument("--source", metavar="IMG", help="the portrait the profile animates (default: you, from the clip)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _record(camera: str, seconds: float):
    """Frames from a camera for ``seconds`` (as an in-memory source)."""
    import time

    from ..capture.camera import CameraSource
    from ..capture.images import ImageSequenceSource

    device = int(camera) if str(camera).isdigit() else camera
    images = []
    with CameraSource(device) as cam:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            frame = cam.read(0.5)
            if frame is not None:
                images.append(frame.image)
    return ImageSequenceSource(images, fps=30.0, loop=False)


def run_personalize(args) -> int:
    import torch
    from tqdm import tqdm

    from ..capture.video import VideoFileSource
    from ..face.source import prepare_source, read_image
    from ..models.identity import IdentityEncoder
    from ..models.shipped import default_preset, personalization_start
    from ..profiles import save_profile, validate_name
    from .personalize import CancelToken, auto_plan, clip_frames, personalize

    validate_name(args.name)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    source = VideoFileSource(args.clip) if args.clip else _record(args.camera, args.record)
    clip = clip_frames(source)
    preset = args.preset or default_preset()
    shipped, meta = personalization_start(preset, args.weights, auto_plan(device))
    start = meta or shipped  # the weights adapted (and the base a profile's delta names)
    if not shipped.trained:
        print(f"avatar-app: note: no --weights given and no shipped {preset} weights installed: personalizing the "
              f"untrained {preset} model", file=sys.stderr)
    elif meta is not None:
        print(f"avatar-app: note: adapting from the meta-learned start {meta.weights}; 'before' is the shipped "
              f"{preset} model ({shipped.weights})", file=sys.stderr)
    ref_crop, ref_points = clip.crops[clip.reference], clip.points[clip.reference]
    from ..types import Landmarks

    identity = IdentityEncoder().embed(ref_crop, Landmarks(ref_points, (ref_crop.shape[1], ref_crop.shape[0])))
    token = CancelToken()
    bar = tqdm(total=round(args.budget), unit="s", desc="personalize", disable=args.no_progress)

    def progress(info: dict) -> None:
        bar.n = min(round(info["elapsed"]), bar.total)
        bar.set_postfix(step=info["step"] if not info.get("expected_steps") else f"{info['step']}/~{info['expected_steps']}",
                        loss=f"{info['loss']:.4f}", eta=f"{info['eta']:.0f}s")

    try:
        result = personalize(clip, shipped.model, identity, budget_s=args.budget, progress=progress, cancel=token,
                             start=meta.model if meta is not None else None,
                             device=device, on_estimate=lambda e: tqdm.write(f"avatar-app: {e.message()}", file=sys.stderr))
    except KeyboardInterrupt:
        token.cancel()
        bar.close()
        print("cancelled: nothing was saved; any earlier profile of that name is unchanged", file=sys.stderr)
        return 130
    bar.close()
    portrait = read_image(args.source) if args.source else ref_crop
    if args.source:
        prepare_source(portrait)  # fail now, not at `live`, if the portrait has no face
    metrics = result.metrics()
    provenance = {"base_weights": start.describe(), "budget_s": args.budget,
                  "clip": args.clip or f"recorded {args.record} s from camera {args.camera}", "device": device,
                  "frames": len(clip.crops)}
    profile = save_profile(args.name, result.model.cpu(), portrait, neutral=clip.neutral, metrics=metrics,
                           provenance=provenance, base=start.weights, adapted=result.adapted)
    print(f"profile '{args.name}' saved to {profile.path}: held-out PSNR {result.before['psnr']:.2f} -> "
          f"{result.after['psnr']:.2f} dB, L1 {result.before['l1']:.4f} -> {result.after['l1']:.4f} "
          f"({result.steps} steps in {result.seconds:.1f} s; {result.estimate.steps if result.estimate else '?'} estimated)")
    return 0
