"""Command line: ``avatar-app render | doctor | bench``.

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


def _add_driver_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--driving", metavar="VIDEO", help="a video of a face to follow")
    g.add_argument("--camera", metavar="N", help="a camera index (0, 1, ...) or device path")
    g.add_argument("--synthetic", action="store_true", help="the built-in synthetic driver (no camera needed)")
    p.add_argument("--duration", type=float, default=10.0,
                   help="seconds to record from --camera or --synthetic (default 10)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of --synthetic and --camera (default 25)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avatar-app", description="Animate a portrait with your face.")
    parser.add_argument("--version", action="version", version=f"avatar-app {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("render", help="animate a portrait and write a video")
    r.add_argument("--source", required=True, metavar="IMG", help="the portrait to animate")
    _add_driver_args(r)
    r.add_argument("-o", "--output", required=True, metavar="OUT.mp4", help="video file to write")
    r.add_argument("--size", type=int, choices=(256, 512), default=256, help="avatar crop size in px")
    r.add_argument("--face", type=int, default=None, metavar="INDEX",
                   help="which face of the source to use (0 = largest, the default)")
    r.add_argument("--mode", choices=("relative", "absolute"), default="relative",
                   help="relative: the portrait keeps its face shape and copies your motion (default); "
                        "absolute: it takes your face shape too")
    r.add_argument("--paste-back", action="store_true", help="put the animated face back into the whole portrait")
    r.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    r.add_argument("--tracker-model", metavar="TASK", default=None,
                   help="a mediapipe face_landmarker.task file (default: the bundled face mesh)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")

    sub.add_parser("doctor", help="show versions, cameras, GPU and usable backends")

    b = sub.add_parser("bench", help="time each stage of the live path")
    b.add_argument("--size", type=int, nargs="+", choices=(256, 512), default=[256, 512])
    b.add_argument("--frames", type=int, default=200)
    b.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    return parser


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

    with FaceTracker(model_path=args.tracker_model) as tracker:
        source = prepare_source(args.source, args.size, face_index=args.face, tracker=tracker)
        driver, name, limit = _open_driver(args)
        max_frames = min(x for x in (limit, args.max_frames) if x is not None) if (limit or args.max_frames) else None
        report = render_video(
            source, driver, args.output, tracker=tracker, options=RetargetOptions(mode=args.mode),
            paste=args.paste_back, max_frames=max_frames, progress=not args.no_progress, driver_name=name,
        )
    print(f"wrote {report.output}: {report.frames} frames at {report.frame_size[0]}x{report.frame_size[1]} "
          f"({report.frames_with_face} with a face), {report.fps:.1f} frames/s")
    return 0


def cmd_doctor(args) -> int:
    from .runtime.doctor import format_checks, run_checks

    print(format_checks(run_checks()))
    return 0


def cmd_bench(args) -> int:
    import torch

    from .runtime.bench import bench_geometric, format_results

    if args.threads:
        torch.set_num_threads(args.threads)
    results = [bench_geometric(size, frames=args.frames) for size in args.size]
    print(format_results(results))
    return 0


COMMANDS = {"render": cmd_render, "doctor": cmd_doctor, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    if not args.debug:  # OpenCV's own warnings (e.g. for a missing camera) repeat what our errors say
        import cv2

        cv2.setLogLevel(0)  # 0 = silent
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
