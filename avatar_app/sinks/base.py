"""The interface every frame sink implements.

A sink is anywhere finished frames go: a preview window, a virtual camera, a video
file.  All of them are used the same way::

    with SomeSink(...) as sink:
        for image in frames:
            sink.send(image)  # (H, W, 3) uint8 BGR, any size

A sink acquires its resource in ``__init__`` (so a problem shows up at start-up as
an :class:`~avatar_app.errors.AvatarError` subclass), adapts every image to what it
needs (size, pixel format) and releases the resource in :meth:`Sink.close`, which may
be called any number of times.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType

import numpy as np


class Sink(ABC):
    """Base class of all frame sinks.

    Subclasses set :attr:`name` and implement :meth:`send` and :meth:`close`; the
    context-manager methods come for free.
    """

    #: Short human-readable name, used in logs and messages ("virtual camera", ...).
    name: str = "sink"

    @abstractmethod
    def send(self, image: np.ndarray) -> None:
        """Deliver one frame.

        Args:
            image: ``(H, W, 3) uint8`` BGR of any size; the sink resizes or converts
                it as it needs.  The sink does not keep a reference to it.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the underlying resource.  Idempotent: later calls do nothing."""

    def __enter__(self) -> "Sink":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
