"""The live path: animators (geometric, neural), the threaded pipeline, offline rendering,
face-loss handling, statistics and the live-path benchmark."""
