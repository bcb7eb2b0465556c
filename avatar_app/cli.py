"""Command line: ``avatar-app gui | live | render | prepare | train | evaluate | personalize | profiles | export |
engines | doctor | bench``.

This module builds the parser and runs one command; the commands live beside it:
:mod:`.animate_commands` (render, live), :mod:`.train.commands` (prepare, train, personalize),
:mod:`.train.evaluate`, :mod:`.profile_commands`, :mod:`.engine_commands` (export, engines,
bench --backend); gui, doctor and bench are here.

Errors a user can fix are printed as one sentence with a non-zero exit code
(see :mod:`avatar_app.errors`); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

# mediapipe's native logging floods stderr at import; keep warnings and errors only.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from . import __version__  # noqa: E402
from .errors import AvatarError  # noqa: E402

log = logging.getLogger("avatar_app")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avatar-app", description="Animate a portrait with your face.")
    parser.add_argument("--version", action="version", version=f"avatar-app {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    from .animate_commands import add_animate_parsers
    from .engine_commands import add_bench_backend_args, add_engine_parsers
    from .profile_commands import add_profiles_parser
    from .train.commands import add_personalize_parser, add_prepare_parser, add_train_parser
    from .train.evaluate import add_evaluate_parser

    add_animate_parsers(sub)
    add_prepare_parser(sub)
    add_train_parser(sub)
    add_evaluate_parser(sub)
    add_personalize_parser(sub)
    add_profiles_parser(sub)
    add_engine_parsers(sub)

    dr = sub.add_parser("doctor", help="show versions, cameras, GPU and usable backends")
    dr.add_argument("--remeasure", action="store_true",
                    help="forget whether the neural animator keeps up live here (the next live start of "
                         "--animator auto measures it again)")

    gui = sub.add_parser("gui", help="open the desktop app (the default when no command is given)")
    gui.add_argument("--source", metavar="IMG", help="the portrait to animate (default: the last one used)")
    gui.add_argument("--synthetic", action="store_true", help="drive the avatar with the built-in synthetic driver")
    gui.add_argument("--start", action="store_true", help="start the avatar right away")

    b = sub.add_parser("bench", help="time each stage of the live path")
    b.add_argument("--size", type=int, nargs="+", choices=(256, 512), default=[256, 512])
    b.add_argument("--frames", type=int, default=200)
    b.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    b.add_argument("--live", action="store_true",
                   help="run the threaded live pipeline at 30 fps instead and report throughput and latency")
    b.add_argument("--seconds", type=float, default=10.0, help="with --live: seconds per run (default 10)")
    b.add_argument("--fps", type=float, nargs="+", default=[30.0], help="with --live: driving frame rates (default 30)")
    b.add_argument("--kind", nargs="+", choices=("synthetic", "tracked"), default=["synthetic", "tracked"],
                   help="with --live: the synthetic driver (no tracking) and/or a tracked real face")
    b.add_argument("--animator", choices=("geometric", "neural"), default="geometric",
                   help="with --live: the animator to time (neural: the shipped weights of --preset's first "
                        "entry, on --backend or auto)")
    b.add_argument("--model", action="store_true",
                   help="parameters, GFLOPs and eager ms of each neural network per preset")
    b.add_argument("--preset", nargs="+", choices=("lite", "full"), default=["lite", "full"])
    b.add_argument("--device", default="cpu", help="with --model: torch device (cpu, cuda)")
    b.add_argument("--half", action="store_true", help="with --model: fp16")
    b.add_argument("--runs", type=int, default=10, help="with --model: timed runs per network")
    add_bench_backend_args(b)
    return parser


def cmd_gui(args) -> int:
    from .ui.app import run_app

    return run_app(source=getattr(args, "source", None), synthetic=getattr(args, "synthetic", False),
                   start=getattr(args, "start", False))


def cmd_doctor(args) -> int:
    from .doctor import format_checks, run_checks

    if args.remeasure:
        from .inference.live_speed import KIND
        from .inference.selftest import VerdictStore

        store = VerdictStore()
        print(f"forgot {store.forget(KIND)} live-speed verdict(s) in {store.path}; the next live start of "
              "--animator auto measures the neural networks again")
    print(format_checks(run_checks()))
    return 0


def cmd_bench(args) -> int:
    import torch

    from .runtime.bench import bench_geometric, format_results

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.live:
        return _bench_live(args)
    if args.backend:
        from .engine_commands import run_bench_backend

        if args.frames == 200:  # the geometric default; the chain needs fewer
            args.frames = 50
        return run_bench_backend(args)
    if args.model:
        from .inference.bench_models import bench_model, format_model_figures

        rows = [r for p in args.preset for r in bench_model(p, args.device, args.half, args.runs)]
        print(format_model_figures(rows, args.device, args.half))
        return 0
    results = [bench_geometric(size, frames=args.frames) for size in args.size]
    print(format_results(results))
    return 0


def _neural_factory(preset: str, backend: str):
    """Makes the neural animator of ``preset``'s shipped weights on ``backend`` for a portrait."""
    import importlib.util

    import numpy as np

    from .models.shipped import shipped_weights
    from .runtime.neural_animator import NeuralAnimator

    weights = shipped_weights(preset)
    identity = None
    if importlib.util.find_spec("dlib") is None:  # a speed benchmark: the embedding's value does not change the time
        identity = np.zeros(128, np.float32)
        print("avatar-app: note: dlib is not installed; timing with a zero identity embedding", file=sys.stderr)

    def make(source):
        anim = NeuralAnimator(source, weights=str(weights) if weights else None, preset=preset, backend=backend,
                              identity=identity)
        print(f"neural {preset} on {anim.chain.choice.explain()}: {anim.chain.device}", file=sys.stderr, flush=True)
        return anim

    return make


def _bench_live(args) -> int:
    """``bench --live``: the threaded pipeline per size, driver kind and frame rate."""
    from .runtime.bench import bench_live, format_live

    factory = _neural_factory(args.preset[0], args.backend or "auto") if args.animator == "neural" else None
    print(format_live([bench_live(size, kind, seconds=args.seconds, fps=fps, animator=factory,
                                  warmup_frames=20 if factory else 0)
                       for size in args.size for kind in args.kind for fps in args.fps]))
    return 0


def _delegate(module: str, function: str):
    """A command run by ``function`` of ``module`` (imported only when that command runs)."""

    def run(args) -> int:
        import importlib

        return getattr(importlib.import_module(module, __package__), function)(args)

    return run


COMMANDS = {"gui": cmd_gui, "render": _delegate(".animate_commands", "run_render"),
            "live": _delegate(".animate_commands", "run_live"),
            "prepare": _delegate(".train.commands", "run_prepare"), "train": _delegate(".train.commands", "run_train"),
            "evaluate": _delegate(".train.evaluate", "run_evaluate"),
            "personalize": _delegate(".train.commands", "run_personalize"),
            "profiles": _delegate(".profile_commands", "run_profiles"),
            "export": _delegate(".engine_commands", "run_export"), "engines": _delegate(".engine_commands", "run_engines"),
            "doctor": cmd_doctor, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        args.command = "gui"  # `avatar-app` alone opens the desktop app (ui/)
    if not args.debug:  # OpenCV's own warnings (e.g. for a missing camera) repeat what our errors say
        import cv2

        quiet = getattr(cv2, "setLogLevel", None) or getattr(getattr(cv2, "utils", None), "logging", None)
        if callable(quiet):
            quiet(0)  # 0 = silent
        elif quiet is not None and hasattr(quiet, "setLogLevel"):
            quiet.setLogLevel(0)
    try:
        return COMMANDS[args.command](args)
    except AvatarError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"avatar-app: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("avatar-app: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
