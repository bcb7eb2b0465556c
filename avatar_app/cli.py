"""Command line: ``avatar-app gui | live | render | prepare | train | evaluate | personalize | profiles | export |
engines | doctor | bench``.

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
from .inference.backend import BACKEND_CHOICES  # noqa: E402

log = logging.getLogger("avatar_app")


def _add_driver_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--driving", metavar="VIDEO", help="a video of a face to follow")
    g.add_argument("--camera", metavar="N", help="a camera index (0, 1, ...) or device path")
    g.add_argument("--synthetic", action="store_true", help="the built-in synthetic driver (no camera needed)")
    p.add_argument("--duration", type=float, default=10.0,
                   help="seconds to record from --camera or --synthetic (default 10)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of --synthetic and --camera (default 25)")


def _add_animator_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--animator", choices=("geometric", "neural"), default="geometric",
                   help="geometric: analytic flow, no weights (default); neural: MetaPortrait's networks "
                        "(the shipped weights trained on real faces unless --weights says otherwise)")
    p.add_argument("--weights", metavar="PATH",
                   help="neural model checkpoint (.safetensors; default: the shipped weights of --preset)")
    p.add_argument("--preset", choices=("lite", "full"), default=None,
                   help="network size for --animator neural without --weights (default: full on a GPU, lite on a CPU)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                   help="where the neural networks run; auto tries tensorrt, torch-cuda, onnxruntime, torch-cpu "
                        "in turn and says why it passed over any (default auto)")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16", "int8"), default=None,
                   help="network precision (default: fp16 on GPUs, fp32 on CPUs; int8 needs --calibration)")
    p.add_argument("--calibration", metavar="SET.npz", help="INT8 calibration set (avatar-app engines calibrate)")


def _add_eye_contact_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eye-contact", action="store_true",
                   help="the avatar keeps looking into the camera (its portrait's gaze) while blinks and expressions "
                        "follow the driver (default: the gaze follows)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avatar-app", description="Animate a portrait with your face.")
    parser.add_argument("--version", action="version", version=f"avatar-app {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("render", help="animate a portrait and write a video")
    r.add_argument("--source", metavar="IMG", help="the portrait to animate")
    r.add_argument("--profile", metavar="NAME", help="a personalized profile (its portrait and adapted weights)")
    _add_driver_args(r)
    r.add_argument("-o", "--output", required=True, metavar="OUT.mp4", help="video file to write")
    r.add_argument("--size", type=int, choices=(256, 512), default=256, help="avatar crop size in px")
    r.add_argument("--face", type=int, default=None, metavar="INDEX",
                   help="which face of the source to use (0 = largest, the default)")
    r.add_argument("--mode", choices=("relative", "absolute"), default="relative",
                   help="relative: the portrait keeps its face shape and copies your motion (default); "
                        "absolute: it takes your face shape too")
    r.add_argument("--paste-back", action="store_true", help="put the animated face back into the whole portrait")
    _add_eye_contact_arg(r)
    r.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    r.add_argument("--tracker-model", metavar="TASK", default=None,
                   help="a mediapipe face_landmarker.task file (default: the bundled face mesh)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_animator_args(r)

    lv = sub.add_parser("live", help="animate a portrait live (virtual camera, preview, recording) until Ctrl-C")
    lv.add_argument("--source", metavar="IMG", help="the portrait to animate")
    lv.add_argument("--profile", metavar="NAME", help="a personalized profile (its portrait, adapted weights, neutral face)")
    g = lv.add_mutually_exclusive_group(required=True)
    g.add_argument("--camera", metavar="N", help="a camera index (0, 1, ...) or device path")
    g.add_argument("--driving", metavar="VIDEO", help="a video of a face, played in a loop at its own speed")
    g.add_argument("--synthetic", action="store_true", help="the built-in synthetic driver")
    lv.add_argument("--virtual-camera", nargs="?", const="", default=None, metavar="DEVICE",
                    help="stream to a virtual camera (optionally a device, e.g. /dev/video10)")
    lv.add_argument("--vcam-size", default="1280x720", metavar="WxH", help="virtual camera frame size (default 1280x720)")
    lv.add_argument("--vcam-format", default="bgr", choices=("bgr", "rgb", "i420", "nv12", "yuyv"),
                    help="pixel format sent to the virtual camera")
    lv.add_argument("--mirror", action="store_true", help="mirror the virtual camera picture")
    lv.add_argument("--preview", action="store_true", help="show a preview window (C: calibrate, Q: quit)")
    lv.add_argument("--record", metavar="OUT.mp4", help="also record the avatar to a video file")
    lv.add_argument("--size", type=int, choices=(256, 512), default=256, help="avatar crop size in px")
    lv.add_argument("--fps", type=float, default=30.0, help="output frame rate (default 30)")
    lv.add_argument("--face", type=int, default=None, metavar="INDEX", help="which face of the source (0 = largest)")
    lv.add_argument("--mode", choices=("relative", "absolute"), default="relative")
    _add_eye_contact_arg(lv)
    lv.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    lv.add_argument("--stats-every", type=float, default=2.0, metavar="S", help="print stats every S s (0: never)")
    lv.add_argument("--tracker-model", metavar="TASK", default=None, help="a mediapipe face_landmarker.task file")
    _add_animator_args(lv)

    from .train.commands import add_train_parser
    from .train.evaluate import add_evaluate_parser
    from .train.prepare import add_prepare_parser

    from .profile_commands import add_profiles_parser
    from .train.commands import add_personalize_parser

    add_prepare_parser(sub)
    add_train_parser(sub)
    add_evaluate_parser(sub)
    add_personalize_parser(sub)
    add_profiles_parser(sub)

    from .engine_commands import add_bench_backend_args, add_engine_parsers

    add_engine_parsers(sub)

    sub.add_parser("doctor", help="show versions, cameras, GPU and usable backends")

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


def resolve_source(args):
    """The portrait image (path or array) and the profile, from --source / --profile."""
    from .errors import AvatarError

    profile = None
    if getattr(args, "profile", None):
        from .profiles import load_profile, load_source

        profile = load_profile(args.profile)
        if args.weights:
            raise AvatarError("--weights and --profile both choose weights; give one of them.")
        args.animator, args.weights = "neural", str(profile.weights_path)
        return (args.source or load_source(profile)), profile
    if not args.source:
        raise AvatarError("Give the portrait to animate with --source IMG (or a personalized --profile NAME).")
    return args.source, None


def make_animator(args, source):
    """The animator the options ask for (None = the pipeline's default, geometric)."""
    from .errors import AvatarError

    if args.animator == "geometric":
        if args.weights:
            raise AvatarError("--weights only applies to --animator neural.")
        return None
    from .models.shipped import default_preset, start_model
    from .runtime.neural_animator import NeuralAnimator

    args.preset = args.preset or default_preset()
    start = start_model(args.preset, args.weights)
    if not start.trained:
        print(f"avatar-app: note: the trained {args.preset} weights are not installed: running the untrained "
              f"{args.preset} neural model, which reproduces the geometric avatar", file=sys.stderr)
    elif start.shipped:
        print(f"avatar-app: note: running the shipped {args.preset} weights, trained on real faces ({start.weights})",
              file=sys.stderr)
    calibration = None
    if args.calibration:
        from .inference.calibration import CalibrationSet

        calibration = CalibrationSet.load(args.calibration)
    elif args.precision == "int8":
        raise AvatarError("--precision int8 needs --calibration SET.npz (make one with 'avatar-app engines calibrate').")
    print("avatar-app: preparing the neural networks (on a GPU the first start compiles them: about a minute)",
          file=sys.stderr, flush=True)
    animator = NeuralAnimator(source, model=start.model, backend=args.backend, precision=args.precision,
                              calibration=calibration)
    print(f"avatar-app: neural networks on {animator.chain.choice.explain()}: {animator.chain.device}", file=sys.stderr)
    return animator


def _open_driver(args):
    from .capture.camera import CameraSource
    from .capture.synthetic import SyntheticDriver
    from .capture.video import VideoFileSource

    if args.synthetic:
        return SyntheticDriver(fps=args.fps, duration=args.duration), "the synthetic driver", None
    if args.driving:
        return VideoFileSource(args.driving), f"'{args.driving}'", None
    device = int(args.camera) if str(args.camera).isdigit() else args.camera
    cam = CameraSource(device, fps=args.fps)
    return cam, f"camera {args.camera}", max(1, int(round(args.duration * args.fps)))


def cmd_render(args) -> int:
    from .face.retarget import RetargetOptions
    from .face.source import prepare_source
    from .face.tracker import FaceTracker
    from .runtime.render import render_video

    image, _profile = resolve_source(args)
    with FaceTracker(model_path=args.tracker_model) as tracker:
        source = prepare_source(image, args.size, face_index=args.face, tracker=tracker)
        driver, name, limit = _open_driver(args)
        max_frames = min(x for x in (limit, args.max_frames) if x is not None) if (limit or args.max_frames) else None
        report = render_video(
            source, driver, args.output, tracker=tracker,
            options=RetargetOptions(mode=args.mode, eye_contact=args.eye_contact),
            paste=args.paste_back, max_frames=max_frames, progress=not args.no_progress, driver_name=name,
            animator=make_animator(args, source),
        )
    print(f"wrote {report.output}: {report.frames} frames at {report.frame_size[0]}x{report.frame_size[1]} "
          f"({report.frames_with_face} with a face), {report.fps:.1f} frames/s")
    return 0


def _parse_size(text: str) -> tuple[int, int]:
    from .errors import AvatarError

    try:
        w, h = (int(v) for v in text.lower().split("x"))
        if w <= 0 or h <= 0 or w % 2 or h % 2:
            raise ValueError
    except ValueError:
        raise AvatarError(f"'{text}' is not a frame size; use WIDTHxHEIGHT with even numbers, e.g. 1280x720.") from None
    return w, h


def cmd_live(args) -> int:
    from .face.tracker import FaceTracker
    from .runtime.live import LiveOptions

    opts = LiveOptions(
        record=args.record, virtual_camera=args.virtual_camera is not None, vcam_device=args.virtual_camera or None,
        vcam_size=_parse_size(args.vcam_size), vcam_format=args.vcam_format, mirror=args.mirror, preview=args.preview,
        stats_every=args.stats_every, duration=args.duration,
    )
    tracker = FaceTracker(model_path=args.tracker_model)
    try:
        return _run_live(args, opts, tracker)
    finally:
        tracker.close()


def _run_live(args, opts, tracker) -> int:
    from .capture.camera import CameraSource
    from .capture.synthetic import SyntheticDriver
    from .capture.video import VideoFileSource
    from .face.retarget import RetargetOptions
    from .face.source import prepare_source
    from .runtime.live import open_sinks, run_live
    from .runtime.pipeline import Pipeline

    image, profile = resolve_source(args)
    source = prepare_source(image, args.size, face_index=args.face, tracker=tracker)
    if args.synthetic:
        driver, pace = SyntheticDriver(fps=args.fps, duration=None, realtime=True), False
    elif args.driving:
        driver, pace = VideoFileSource(args.driving, loop=True), True
    else:
        device = int(args.camera) if str(args.camera).isdigit() else args.camera
        driver, pace = CameraSource(device, fps=args.fps), False
    animator = make_animator(args, source)  # before any output file is created
    ref: list = []
    sinks, warnings = open_sinks(opts, args.size, args.fps, ref)
    for w in warnings:
        print(f"avatar-app: warning: {w}", file=sys.stderr)
    if not sinks:
        print("avatar-app: note: no output chosen (--virtual-camera, --record, --preview); running to show stats only",
              file=sys.stderr)
    pipeline = Pipeline(source, driver, sinks, fps=args.fps, tracker=tracker,
                        options=RetargetOptions(mode=args.mode, eye_contact=args.eye_contact), pace=pace,
                        animator=animator)
    ref.append(pipeline)
    if profile is not None and profile.neutral is not None and args.camera is not None:
        pipeline.set_neutral(profile.neutral)  # the face the user calibrated while personalizing
    stats = run_live(pipeline, opts)
    print(f"live: {stats.frames_animated} avatar frames, {stats.output_fps:.1f} fps, latency p50 "
          f"{stats.latency_ms[0]:.0f} ms / p95 {stats.latency_ms[1]:.0f} ms"
          + (f"; stopped outputs: {stats.sink_errors}" if stats.sink_errors else ""))
    return 0


def cmd_gui(args) -> int:
    from .ui.app import run_app

    return run_app(source=getattr(args, "source", None), synthetic=getattr(args, "synthetic", False),
                   start=getattr(args, "start", False))


def cmd_doctor(args) -> int:
    from .doctor import format_checks, run_checks

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


COMMANDS = {"gui": cmd_gui, "render": cmd_render, "live": cmd_live,
            "prepare": _delegate(".train.prepare", "run_prepare"), "train": _delegate(".train.commands", "run_train"),
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
