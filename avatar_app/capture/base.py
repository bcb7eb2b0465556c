"""The interface every frame source implements.

A frame source is anything that produces :class:`~avatar_app.types.Frame` objects:
a video file, a live camera, a synthetic driver.  All of them are used the same way::

    with SomeSource(...) as source:
        for frame in source:
            ...  # frame.image is (H, W, 3) uint8 BGR

``__enter__`` opens the source (and raises an :class:`~avatar_app.errors.AvatarError`
subclass if it cannot), ``__exit__`` closes it.  ``close()`` may be called any number
of times.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from types import TracebackType

from avatar_app.types import Frame


class FrameSource(ABC):
    """Base class of all frame sources.

    Subclasses implement :meth:`open`, :meth:`close`, :meth:`__iter__`, :attr:`fps`
    and :attr:`frame_size`; the context-manager methods come for free.
    """

    @abstractmethod
    def open(self) -> None:
        """Acquire the underlying resource.

        Calling it on an already open source does nothing.

        Raises:
            AvatarError: a subclass saying why the source cannot be opened.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the underlying resource.  Idempotent: later calls do nothing."""

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        """Yield frames in order.

        Each :class:`Frame` has ``image`` ``(H, W, 3) uint8`` BGR, ``timestamp`` in
        seconds and ``index``, a running frame number starting at 0.
        """

    @property
    @abstractmethod
    def fps(self) -> float | None:
        """Nominal frames per second, or ``None`` if unknown."""

    @property
    @abstractmethod
    def frame_size(self) -> tuple[int, int] | None:
        """``(width, height)`` of the frames in px, or ``None`` if not known yet."""

    def __enter__(self) -> "FrameSource":
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
