"""The live pipeline: capture → track (+ retarget) → animate → sinks, one thread each.

Stages hand over through :class:`LatestSlot` — a one-item mailbox where a new item
replaces an unread one — so a slow stage skips stale frames instead of queueing
them and building latency.  The sink stage is the clock: it sends the newest
avatar to every sink at a steady ``fps`` (repeating the last one when nothing new
came, so a virtual camera never stalls while the camera reconnects or a stage
hiccups).

Front ends drive a :class:`Pipeline` (start, stop, set source, calibrate, swap
animator, read :meth:`Pipeline.stats`, :meth:`Pipeline.subscribe` to frames); the
pipeline never imports GUI code.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from ..capture.base import FrameSource
from ..face.brows import portrait_brow_follow
from ..face.retarget import Retargeter, RetargetOptions
from ..face.tracker import FaceTracker
from ..sinks.base import Sink
from ..types import Frame, Landmarks, SourcePortrait
from .animator import GeometricAnimator, retarget_options
from .face_loss import DriverGuard, FaceLossSmoother
from .stats import AvatarFrame, LatestSlot, PipelineStats, Timings

log = logging.getLogger(__name__)

__all__ = ["AvatarFrame", "LatestSlot", "Pipeline", "PipelineStats"]


class Pipeline:
    """Runs the live avatar.

    Args:
        portrait: the prepared source portrait.
        driver: where driving frames come from (opened by :meth:`start`).
        sinks: where avatars go (recorder, virtual camera, preview...).
        fps: the rate sinks are kept fed at: new avatars go out as soon as they are made,
            and the last one is repeated when none came for ``1.5 / fps`` s.
        tracker: reuse a tracker (one is created otherwise).
        options: retargeting options (their motion limits are the animator's: ``retarget_options``).
        face_loss: timing of hold / ease / resume when the face is lost or jumps (see :class:`DriverGuard`).
        pace: play the driver at its own frame rate (for video files, which decode
            faster than real time); cameras and the realtime synthetic driver pace
            themselves.
        stats_window: how many recent samples the timing percentiles cover.
        animator: what turns target landmarks into avatars (default: geometric).
    """

    def __init__(self, portrait: SourcePortrait, driver: FrameSource, sinks: list[Sink] | None = None,
                 fps: float = 30.0, tracker: FaceTracker | None = None, options: RetargetOptions | None = None,
                 face_loss: FaceLossSmoother | None = None, pace: bool = False, stats_window: int = 300,
                 animator=None):
        self.portrait = portrait
        self.driver = driver
        self.fps = float(fps)
        self.pace = pace
        self._sinks: list[Sink] = list(sinks or [])
        self._own_tracker = tracker is None
        self._tracker = tracker
        self._animator = animator if animator is not None else GeometricAnimator(portrait)
        self._options = retarget_options(self._animator, options)  # the motion limits are the animator's
        self._retarget = Retargeter(portrait.landmarks, self._options)
        self._driver_guard = DriverGuard(self._retarget, face_loss or FaceLossSmoother())
        self._lock = threading.Lock()  # guards portrait/retargeter/sinks (held briefly)
        # Serialises the animator's own use (animate vs. set_source / swap), so a slow neural
        # frame never blocks tracking or the sinks.  Taken before ``_lock`` when both are needed.
        self._animate_lock = threading.Lock()
        self._calibrate_next = False
        self._subscribers: list[Callable[[AvatarFrame], None]] = []
        self._sink_errors: dict[str, str] = {}
        self._stats_window = stats_window
        self._timings = Timings(stats_window)
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._counts = {"captured": 0, "animated": 0, "sent": 0}
        self._face_state = "no face yet"
        self._errors: list[BaseException] = []

    # -- control ---------------------------------------------------------------------------
    def start(self) -> None:
        """Open the driver and start the threads (raises if the driver cannot open)."""
        if self.running:
            return
        if self._tracker is None:
            self._tracker = FaceTracker()
        self.driver.open()
        with self._lock:
            self._driver_guard.reset()  # a new run: the driver's clock may start over
        self._stop.clear()
        self._stopped.clear()
        self._frames: LatestSlot[tuple[Frame, float]] = LatestSlot()
        self._targets: LatestSlot[tuple[Landmarks, float, int, str]] = LatestSlot()
        self._avatars: LatestSlot[AvatarFrame] = LatestSlot()
        self._threads = [
            threading.Thread(target=self._guard, args=(self._capture_loop,), name="avatar-capture", daemon=True),
            threading.Thread(target=self._guard, args=(self._track_loop,), name="avatar-track", daemon=True),
            threading.Thread(target=self._guard, args=(self._animate_loop,), name="avatar-animate", daemon=True),
            threading.Thread(target=self._guard, args=(self._sink_loop,), name="avatar-sinks", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop all threads and close the driver and sinks; returns within about ``timeout`` s."""
        self._stop.set()
        for slot in (getattr(self, "_frames", None), getattr(self, "_targets", None), getattr(self, "_avatars", None)):
            if slot is not None:
                slot.close()
        deadline = time.monotonic() + timeout
        capture = self._threads[0] if self._threads else None
        if capture is not None:
            capture.join(min(0.3, timeout))
            if capture.is_alive():
                # blocked waiting for a (lost) camera: closing it from here is safe and ends the wait
                self.driver.close()
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.driver.close()
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("pipeline threads still running after stop: %s", ", ".join(alive))
        self._close_sinks()  # (already done by the sink thread unless it was stuck)
        if self._own_tracker and self._tracker is not None:
            self._tracker.close()
            self._tracker = None
        self._stopped.set()

    def request_stop(self) -> None:
        """Ask the pipeline to stop (safe from any thread, e.g. a preview key)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop is requested (or the driver ends); True if it was."""
        return self._stop.wait(timeout)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    @property
    def error(self) -> BaseException | None:
        """The first exception that stopped a stage, if any."""
        return self._errors[0] if self._errors else None

    def calibrate(self) -> None:
        """Take the next frame with a face as the driver's neutral pose."""
        self._calibrate_next = True

    def set_neutral(self, neutral: Landmarks) -> None:
        """Use these landmarks (driver px) as the driver's neutral pose, e.g. a profile's."""
        with self._lock:
            self._retarget.calibrate(neutral)

    def set_eye_contact(self, on: bool) -> None:
        """Hold the avatar's gaze at its neutral (eye contact) or let it follow the driver's, from the next frame."""
        with self._lock:
            self._options = dataclasses.replace(self._options, eye_contact=bool(on))
            self._retarget.options = self._options

    @property
    def animator(self):
        return self._animator

    def set_source(self, portrait: SourcePortrait, model=None) -> None:
        """Animate another portrait (same crop size); the driver's neutral is kept.  With
        ``model``, the animator also runs those weights (its ``set_model``: a profile's
        personalized model swapped into the running networks)."""
        brows = portrait_brow_follow(portrait)  # (a few ms: not while the tracking thread waits for the lock)
        with self._animate_lock:
            with self._lock:
                self.portrait = portrait
                self._options = dataclasses.replace(self._options, brow_follow=brows)
                self._retarget = self._retarget.onto(portrait.landmarks)
                self._retarget.options = self._options
                self._driver_guard.retarget = self._retarget
                self._driver_guard.reset()
            if model is not None:
                self._animator.set_model(model, portrait)
            else:
                self._animator.set_source(portrait)

    def set_animator(self, animator) -> None:
        """Swap the animator (anything with ``animate(Landmarks) -> image`` and ``timings``); the head
        motion takes its limits from the next frame on."""
        with self._animate_lock:
            self._animator = animator
            with self._lock:
                self._options = retarget_options(animator, self._options)
                self._retarget.options = self._options

    def add_sink(self, sink: Sink) -> None:
        with self._lock:
            self._sinks.append(sink)

    def subscribe(self, callback: Callable[[AvatarFrame], None]) -> Callable[[], None]:
        """Call ``callback(frame)`` for every new avatar (on the sink thread); returns an unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def reset_stats(self) -> None:
        """Forget timings so far (e.g. after a warm-up)."""
        self._timings = Timings(self._stats_window)

    def stats(self) -> PipelineStats:
        now = time.monotonic()
        stage = self._timings.percentiles()
        latency = stage.pop("latency", (0.0, 0.0))
        slots = {"capture": "_frames", "track": "_targets", "animate": "_avatars"}
        dropped = {k: getattr(self, v).dropped for k, v in slots.items() if hasattr(self, v)}
        state = getattr(self.driver, "state", None)
        return PipelineStats(
            running=self.running, output_fps=self._timings.rate("animated", now),
            capture_fps=self._timings.rate("captured", now), latency_ms=latency, stage_ms=stage,
            frames_captured=self._counts["captured"], frames_animated=self._counts["animated"],
            frames_sent=self._counts["sent"], dropped=dropped, face_state=self._face_state,
            source_state=str(getattr(state, "value", state) or ("running" if self.running else "stopped")),
            sink_errors=dict(self._sink_errors),
        )

    # -- stages --------------------------------------------------------------------------
    def _guard(self, loop: Callable[[], None]) -> None:
        try:
            loop()
        except Exception as exc:  # a crashed stage stops the pipeline and is reported
            log.exception("pipeline stage %s failed", threading.current_thread().name)
            self._errors.append(exc)
            self._stop.set()

    def _capture_loop(self) -> None:
        fps = self.driver.fps or self.fps
        start = time.monotonic()
        try:
            for n, frame in enumerate(self.driver):
                if self._stop.is_set():
                    break
                if self.pace:
                    delay = start + n / fps - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                now = time.monotonic()
                self._counts["captured"] += 1
                self._timings.event("captured", now)
                self._frames.put((frame, now))
            else:
                log.info("the driving source ended")
                self._stop.set()
        finally:
            self.driver.close()

    def _track_loop(self) -> None:
        while not self._stop.is_set():
            item = self._frames.get(0.1)
            if item is None:
                continue
            frame, captured_at = item
            t0 = time.perf_counter()
            result = self._tracker.track(frame)
            t1 = time.perf_counter()
            with self._lock:
                neutral = self.portrait.landmarks
                if result.found and self._calibrate_next:
                    self._retarget.calibrate(result.landmarks)
                    self._calibrate_next = False
                # on the driver's clock (capture time, a video's presentation time), as the tracker's
                # smoothing and the offline render: tracking latency and its jitter never change
                # how fast the guard lets the pose move, how long it holds or when a face settles
                shown = self._driver_guard.update(frame.timestamp, result.landmarks if result.found else None,
                                                  neutral, cut=result.cut)
            t2 = time.perf_counter()
            self._face_state = self._driver_guard.state
            self._timings.add("track", (t1 - t0) * 1e3)
            self._timings.add("retarget", (t2 - t1) * 1e3)
            self._targets.put((shown, captured_at, frame.index, self._face_state))

    def _animate_loop(self) -> None:
        while not self._stop.is_set():
            item = self._targets.get(0.1)
            if item is None:
                continue
            target, captured_at, index, face_state = item
            t0 = time.perf_counter()
            with self._animate_lock:
                image = self._animator.animate(target)
                timings = dict(getattr(self._animator, "timings", {}))
            self._timings.add("animate", (time.perf_counter() - t0) * 1e3)
            for k, v in timings.items():
                self._timings.add(k, v)
            self._counts["animated"] += 1
            self._avatars.put(AvatarFrame(image, captured_at, index, face_state))

    def _sink_loop(self) -> None:
        try:
            self._feed_sinks()
        finally:
            self._close_sinks()  # on this thread: GUI sinks must be closed by the thread that drew them

    def _feed_sinks(self) -> None:
        # repeat the last avatar only after a real gap (not mere jitter), so sinks do not
        # receive doubled frames when the driver runs at about the sink rate
        keepalive = 1.5 / self.fps
        current = AvatarFrame(self.portrait.crop, time.monotonic(), -1, self._face_state)
        last_send = -1e9
        while not self._stop.is_set():
            fresh = self._avatars.get(max(0.0, last_send + keepalive - time.monotonic()))
            if fresh is None and time.monotonic() - last_send < keepalive:
                continue
            if fresh is not None:
                current = fresh
            t0 = time.perf_counter()
            self._send(current.image)
            last_send = time.monotonic()
            self._timings.add("sinks", (time.perf_counter() - t0) * 1e3)
            self._counts["sent"] += 1
            if fresh is not None:
                self._timings.add("latency", (last_send - fresh.captured_at) * 1e3)
                self._timings.event("animated", last_send)
                for callback in list(self._subscribers):
                    callback(fresh)

    def _close_sinks(self) -> None:
        with self._lock:
            sinks = list(self._sinks)
        for sink in sinks:
            try:
                sink.close()
            except Exception as exc:  # one broken sink must not keep others open
                log.warning("closing %s failed: %s", sink.name, exc)

    def _send(self, image: np.ndarray) -> None:
        with self._lock:
            sinks = list(self._sinks)
        for sink in sinks:
            if sink.name in self._sink_errors:
                continue
            try:
                sink.send(image)
            except Exception as exc:  # a failing sink is dropped; the others keep running
                self._sink_errors[sink.name] = str(exc)
                log.error("%s stopped: %s", sink.name, exc)
