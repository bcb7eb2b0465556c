"""avatar_app: a real-time webcam avatar built on the MetaPortrait method."""

__version__ = "0.1.0"
