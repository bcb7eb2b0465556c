"""Frame sources: where driving frames come from (video files, live cameras)."""

from avatar_app.capture.base import FrameSource
from avatar_app.capture.camera import CameraSource, CameraState, list_cameras
from avatar_app.capture.video import VideoFileSource

__all__ = ["CameraSource", "CameraState", "FrameSource", "VideoFileSource", "list_cameras"]
