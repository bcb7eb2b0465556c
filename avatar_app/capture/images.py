"""A frame source that plays a list of images (benchmarks, tests, a still photo as driver)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from ..imaging import as_bgr
from ..types import Frame
from .base import FrameSource


class ImageSequenceSource(FrameSource):
    """Yield ``images`` in order at a nominal ``fps`` (no pacing: pair it with a paced pipeline).

    Args:
        images: BGR (or grey/BGRA) uint8 images, all the same size.
        fps: nominal frame rate (timestamps are index / fps).
        loop: start again after the last image; otherwise stop there.
        count: stop after this many frames (``None``: no limit when looping).
    """

    def __init__(self, images: Sequence[np.ndarray], fps: float = 30.0, loop: bool = True, count: int | None = None):
        if not images:
            raise ValueError("ImageSequenceSource needs at least one image")
        self._images = [as_bgr(im) for im in images]
        self._fps = float(fps)
        self.loop = loop
        self.count = count
        self._closed = False

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def frame_size(self) -> tuple[int, int]:
        h, w = self._images[0].shape[:2]
        return (w, h)

    @property
    def frame_count(self) -> int | None:
        if self.count is not None:
            return self.count
        return None if self.loop else len(self._images)

    def open(self) -> None:
        self._closed = False

    def close(self) -> None:
        self._closed = True

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        n = len(self._images)
        while not self._closed and (self.count is None or i < self.count) and (self.loop or i < n):
            yield Frame(image=self._images[i % n], timestamp=i / self._fps, index=i)
            i += 1
