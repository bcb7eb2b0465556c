"""``avatar-app render | live``: animating a portrait from the command line.

Their arguments (driver, animator, eye contact), the portrait or profile they animate
(:func:`resolve_source`), the animator the options ask for (:func:`make_animator`) and the
two runners.  What a command needs is imported when it runs, so ``avatar-app --help`` stays quick.
"""

from __future__ import annotations

import argparse
import sys

from .inference.backend import BACKEND_CHOICES
from .inference.default_animator import WHY_GEOMETRIC, WHY_NEURAL


def _add_driver_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--driving", metavar="VIDEO", help="a video of a face to follow")
    g.add_argument("--camera", metavar="N", help="a camera index (0, 1, ...) or device path")
    g.add_argument("--synthetic", action="store_true", help="the built-in synthetic driver (no camera needed)")
    p.add_argument("--duration", type=float, default=10.0,
                   help="seconds to record from --camera or --synthetic (default 10)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of --synthetic and --camera (default 25)")


def _add_animator_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--animator", choices=("auto", "geometric", "neural"), default="auto",
                   help="geometric: analytic flow, no weights; neural: MetaPortrait's networks (the shipped weights "
                        "trained on real faces unless --weights says otherwise); auto (the default): neural where "
                        "a GPU runs it (or --weights is given), else geometric. " + WHY_NEURAL + "; "
                        + WHY_GEOMETRIC + ".")
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


def add_animate_parsers(sub) -> None:
    """Add ``render`` and ``live`` to the CLI's subparsers (run by :func:`run_render` and :func:`run_live`)."""
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


def resolve_source(args):
    """The portrait image (path or array) and the profile, from --source / --profile."""
    from .errors import UsageError

    profile = None
    if getattr(args, "profile", None):
        from .profiles import load_profile, load_source

        if args.weights:  # before the profile is looked for: the flags are wrong whether it exists or not
            raise UsageError("--weights and --profile both choose weights; give one of them.")
        profile = load_profile(args.profile)
        args.animator, args.weights = "neural", str(profile.weights_path)
        return (args.source or load_source(profile)), profile
    if not args.source:
        raise UsageError("Give the portrait to animate with --source IMG (or a personalized --profile NAME).")
    return args.source, None


def make_animator(args, source, live: bool = False):
    """The animator the options ask for (None = the pipeline's default, geometric); ``auto`` is
    :func:`~avatar_app.inference.default_animator.machine_default` (said on stderr), or neural with ``--weights``.
    ``live``: where ``auto`` chose the neural animator, it must keep up (:mod:`~avatar_app.inference.live_speed`:
    measured on the first start here), else the geometric one runs, saying why."""
    from .errors import UsageError
    from .inference.default_animator import machine_default
    from .models.shipped import default_preset, start_model

    chosen_by_auto = False
    if args.animator == "auto":
        if args.weights:
            args.animator = "neural"
        else:
            default = machine_default(source.size, live=live, on_backend=args.backend)
            chosen_by_auto = default.animator == "neural"
            args.animator, args.preset = default.animator, args.preset or default.preset
            print(f"avatar-app: note: {default.why} (--animator chooses)", file=sys.stderr)
    if args.animator == "geometric":
        if args.weights:
            raise UsageError("--weights only applies to --animator neural.")
        return None
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
        raise UsageError("--precision int8 needs --calibration SET.npz (make one with 'avatar-app engines calibrate').")
    print("avatar-app: preparing the neural networks (on a GPU the first start compiles them: about a minute)",
          file=sys.stderr, flush=True)
    animator = NeuralAnimator(source, model=start.model, backend=args.backend, precision=args.precision,
                              calibration=calibration)
    print(f"avatar-app: neural networks on {animator.chain.choice.explain()}: {animator.chain.device}", file=sys.stderr)
    if chosen_by_auto and live:
        from .inference.live_speed import fallback_reason

        why = fallback_reason(animator, args.preset, source.size)
        if why is not None:
            print(f"avatar-app: note: {why}", file=sys.stderr)
            args.animator = "geometric"
            return None
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


def run_render(args) -> int:
    """``avatar-app render``: animate a portrait along a driver and write a video."""
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
    from .errors import UsageError

    try:
        w, h = (int(v) for v in text.lower().split("x"))
        if w <= 0 or h <= 0 or w % 2 or h % 2:
            raise ValueError
    except ValueError:
        raise UsageError(f"'{text}' is not a frame size; use WIDTHxHEIGHT with even numbers, e.g. 1280x720.") from None
    return w, h


def run_live(args) -> int:
    """``avatar-app live``: animate a portrait live until Ctrl-C (or ``--duration``)."""
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
    animator = make_animator(args, source, live=True)  # before any output file is created
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
