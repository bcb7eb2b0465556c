"""Frame sinks: where finished frames go (video files, ...)."""

from avatar_app.sinks.recorder import VideoRecorder

__all__ = ["VideoRecorder"]
