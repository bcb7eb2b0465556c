"""Hand-over slots and statistics for the live pipeline (readable from any thread)."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """A thread-safe one-item mailbox: ``put`` replaces, ``get`` waits for something new."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._seq = 0
        self._taken = 0
        self.dropped = 0
        self._closed = False

    def put(self, item: T) -> None:
        with self._cond:
            if self._seq > self._taken:
                self.dropped += 1  # the previous item was never read
            self._item = item
            self._seq += 1
            self._cond.notify_all()

    def get(self, timeout: float) -> T | None:
        """The newest unread item, or None after ``timeout`` s (or once closed)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._seq > self._taken or self._closed, timeout):
                return None
            if self._seq == self._taken:
                return None
            self._taken = self._seq
            return self._item

    def peek(self) -> T | None:
        with self._cond:
            return self._item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class AvatarFrame:
    """One avatar image and where it came from."""

    image: np.ndarray
    captured_at: float  # time.monotonic() when its driving frame arrived
    index: int  # driving frame index
    face_state: str


class Timings:
    """Rolling per-stage durations (ms) and event times, safe to read from any thread."""

    def __init__(self, window: int = 300):
        self._lock = threading.Lock()
        self._ms: dict[str, deque] = {}
        self._events: dict[str, deque] = {}
        self._window = window

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self._ms.setdefault(stage, deque(maxlen=self._window)).append(ms)

    def event(self, name: str, t: float) -> None:
        with self._lock:
            self._events.setdefault(name, deque(maxlen=self._window)).append(t)

    def percentiles(self) -> dict[str, tuple[float, float]]:
        with self._lock:
            data = {k: np.asarray(v) for k, v in self._ms.items() if v}
        return {k: (float(np.percentile(v, 50)), float(np.percentile(v, 95))) for k, v in data.items()}

    def rate(self, name: str, now: float, span: float = 2.0) -> float:
        with self._lock:
            times = [t for t in self._events.get(name, ()) if now - t <= span]
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-6)


@dataclass
class PipelineStats:
    """A snapshot for front ends (all times in ms, rates in frames/s)."""

    running: bool
    output_fps: float  # new avatar frames per second reaching the sinks
    capture_fps: float
    latency_ms: tuple[float, float]  # capture -> sink, (p50, p95)
    stage_ms: dict[str, tuple[float, float]]  # stage -> (p50, p95)
    frames_captured: int
    frames_animated: int
    frames_sent: int
    dropped: dict[str, int]
    face_state: str
    source_state: str
    sink_errors: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        stages = ", ".join(f"{k} {v[0]:.1f}" for k, v in self.stage_ms.items() if k != "latency")
        return (f"{self.output_fps:5.1f} fps | latency p50 {self.latency_ms[0]:.0f} ms p95 {self.latency_ms[1]:.0f} ms"
                f" | face: {self.face_state} | source: {self.source_state} | stages (ms): {stages}")
