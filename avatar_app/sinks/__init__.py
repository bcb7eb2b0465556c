"""Frame sinks: where finished frames go (preview window, virtual camera, video file)."""

from avatar_app.sinks.base import Sink
from avatar_app.sinks.preview import PreviewWindow
from avatar_app.sinks.recorder import VideoRecorder
from avatar_app.sinks.virtualcam import VirtualCameraSink, VirtualCameraUnavailable

__all__ = [
    "PreviewWindow",
    "Sink",
    "VideoRecorder",
    "VirtualCameraSink",
    "VirtualCameraUnavailable",
]
