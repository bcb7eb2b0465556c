"""Running the live pipeline from a terminal: sinks from options, periodic stats, clean stop."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

from ..errors import AvatarError, OutputError
from ..sinks.base import Sink
from .pipeline import Pipeline, PipelineStats

log = logging.getLogger(__name__)


@dataclass
class LiveOptions:
    """Which sinks to open and how to report."""

    record: str | None = None
    virtual_camera: bool = False
    vcam_device: str | None = None
    vcam_size: tuple[int, int] = (1280, 720)
    vcam_format: str = "bgr"
    mirror: bool = False
    preview: bool = False
    stats_every: float = 2.0
    duration: float | None = None


def open_sinks(opts: LiveOptions, size: int, fps: float, pipeline_ref: list) -> tuple[list[Sink], list[str]]:
    """Open the requested sinks; returns ``(sinks, warnings)``.

    A virtual camera that cannot open is a warning (the other sinks still run) unless it
    was the only output asked for, which is an error.
    """
    from ..sinks.recorder import VideoRecorder

    sinks: list[Sink] = []
    warnings: list[str] = []
    try:
        if opts.record:
            sinks.append(VideoRecorder(opts.record, fps, (size, size)))
        if opts.preview:
            from ..sinks.preview import PreviewWindow

            def on_key(action: str) -> None:
                if pipeline_ref and action == "calibrate":
                    pipeline_ref[0].calibrate()
                elif pipeline_ref and action == "quit":
                    pipeline_ref[0].request_stop()

            sinks.append(PreviewWindow(on_key=on_key))
        if opts.virtual_camera:
            from ..sinks.virtualcam import VirtualCameraSink, VirtualCameraUnavailable

            try:
                sinks.append(VirtualCameraSink(opts.vcam_size[0], opts.vcam_size[1], fps, device=opts.vcam_device,
                                               pixel_format=opts.vcam_format, mirror=opts.mirror))
            except VirtualCameraUnavailable as exc:
                if not sinks:
                    raise
                warnings.append(str(exc))
    except AvatarError:
        for s in sinks:
            s.close()
        raise
    return sinks, warnings


def run_live(pipeline: Pipeline, opts: LiveOptions, out=sys.stderr) -> PipelineStats:
    """Run until Ctrl-C, a stop request (preview Q), the driver's end or ``opts.duration``."""
    pipeline.start()
    start = last = time.monotonic()
    try:
        while not pipeline.wait(0.2):
            now = time.monotonic()
            if opts.stats_every and now - last >= opts.stats_every:
                print(pipeline.stats().summary(), file=out, flush=True)
                last = now
            if opts.duration is not None and now - start >= opts.duration:
                break
    except KeyboardInterrupt:
        print("stopping…", file=out, flush=True)
    finally:
        stats = pipeline.stats()
        pipeline.stop()
    if pipeline.error is not None:
        err = pipeline.error
        if isinstance(err, AvatarError):
            raise err
        raise OutputError(f"The live pipeline stopped on an internal error ({err}); run with --debug for details.")
    return stats
