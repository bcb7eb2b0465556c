"""The wizard's adaptation, run in a process of its own (no Qt here).

Adapting holds the GIL in long stretches that no thread can interrupt: dlib loading its models
(~0.25 s) and computing the identity embedding (0.1-0.4 s), torch importing its compiler
support on the first optimiser, the garbage collector walking what the trainer and the model
copies allocate, mediapipe's first frame.  Measured in the wizard on 2 cores, these stalled
the UI thread 200-400 ms.  A process of its own shares no GIL with the UI: the wizard's
:class:`~avatar_app.ui.recording.Adapter` starts :func:`child_main` (``spawn``), hands it the
recorded frames over a pipe and relays what comes back (stage, estimate, progress, the
outcome) as Qt signals.

Messages, child to parent: ``("stage", text)``, ``("estimate", Estimate)``, ``("progress", dict)``,
then one of ``("finished", Adapted)``, ``("cancelled", None)``, ``("failed", sentence)``.
Parent to child: the frames (see :func:`send_frames`), then at any time ``"cancel"``.
"""

from __future__ import annotations

import logging
import pickle
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import describe_error
from ..types import Landmarks, SourcePortrait

log = logging.getLogger(__name__)


@dataclass
class AdaptedResult:
    """What the wizard needs of a :class:`~avatar_app.train.personalize.PersonalizeResult`.  The model
    stays in the adapting process (unpickling a torch module here held the GIL for up to 0.7 s):
    :attr:`Adapted.weights` carries its weights file instead."""

    steps: int
    seconds: float
    estimate: object  # the Estimate the probe made
    summary: dict  # PersonalizeResult.metrics()

    def metrics(self) -> dict:
        return self.summary


@dataclass
class Adapted:
    """The outcome of adaptation, ready to save or discard."""

    result: AdaptedResult
    clip: object  # ClipFrames
    previews: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (held-out frame, before, after), 256 px BGR
    base_weights: str
    weights: bytes  # the profile's weights file (profiles.write_weights: over base_path when there is one)
    device: str = "cpu"
    base_path: str | None = None  # the checkpoint adapted


def send(conn, message) -> None:
    """One message as pickled bytes (plain pickle: tensors travel by value, not as shared memory)."""
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def receive(conn):
    return pickle.loads(conn.recv_bytes())


def send_frames(conn, images: list[np.ndarray], fps: float) -> None:
    """The recording, one frame per message (no pickling of one large list, no copy of it all)."""
    send(conn, (len(images), fps))
    for image in images:
        image = np.ascontiguousarray(image)
        send(conn, (image.shape, image.dtype.str))
        conn.send_bytes(memoryview(image).cast("B"))


def receive_frames(conn) -> tuple[list[np.ndarray], float]:
    count, fps = receive(conn)
    images = []
    for _ in range(count):
        shape, dtype = receive(conn)
        images.append(np.frombuffer(conn.recv_bytes(), dtype=dtype).reshape(shape).copy())
    return images, fps


def child_main(conn, budget_s: float, weights: str | None, preset: str) -> None:
    """The child process: receive the frames, adapt, send the outcome; ``"cancel"`` from the parent stops it."""
    from ..train.personalize import CancelToken

    token = CancelToken()

    def say(kind: str, payload) -> None:  # only this (the main) thread sends
        send(conn, (kind, payload))

    try:
        images, fps = receive_frames(conn)
    except (EOFError, OSError):
        return  # the parent went away before sending the recording

    def listen() -> None:
        try:
            while receive(conn) != "cancel":
                pass
        except (EOFError, OSError):
            pass  # the parent is gone: stop too
        token.cancel()

    threading.Thread(target=listen, name="avatar-adapt-listener", daemon=True).start()
    try:
        adapted = adapt(images, fps, budget_s, weights, preset, token, say)
        say("finished", adapted) if adapted is not None else say("cancelled", None)
    except Exception as exc:
        log.exception("adaptation failed")
        say("failed", describe_error(exc))
    conn.close()


def adapt(images: list[np.ndarray], fps: float, budget_s: float, weights: str | None, preset: str, cancel,
          say: Callable[[str, object], None]) -> Adapted | None:
    """Find the face, measure its identity, personalize for ``budget_s`` s, preview before and after;
    ``None`` when ``cancel`` (a :class:`~avatar_app.train.personalize.CancelToken`) was set."""
    import torch

    from ..capture.images import ImageSequenceSource
    from ..models.identity import IdentityEncoder
    from ..models.shipped import personalization_start
    from ..profiles import write_weights
    from ..train.personalize import auto_plan, clip_frames, personalize

    say("stage", "Finding your face in the recording…")
    clip = clip_frames(ImageSequenceSource(images, fps=fps, loop=False))
    ref = clip.reference
    size = clip.crops[ref].shape[0]
    say("stage", "Measuring your face's identity…")
    identity = IdentityEncoder().embed(clip.crops[ref], Landmarks(clip.points[ref], (size, size)))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # chosen weights, else the shipped ones (and their meta-learned start for this device's plan)
    shipped, meta = personalization_start(preset, weights, auto_plan(device))
    start, base = meta or shipped, shipped.model  # adapted from start; "before" is base, what the app animates with
    say("stage", f"Adapting the model to you ({budget_s:.0f} s)…")
    result = personalize(clip, base, identity, budget_s=budget_s, cancel=cancel, device=device,
                         start=meta.model if meta is not None else None,
                         progress=lambda info: say("progress", info), on_estimate=lambda e: say("estimate", e))
    if result.cancelled:
        return None
    say("stage", "Comparing before and after on frames it did not train on…")
    previews = before_after(clip, base, result.model, identity)
    base_path = str(start.weights) if start.weights is not None else None
    with tempfile.TemporaryDirectory() as folder:
        path = write_weights(result.model.cpu(), Path(folder) / "weights.safetensors", base_path, result.adapted)
        weights = path.read_bytes()
    summary = AdaptedResult(result.steps, result.seconds, result.estimate, result.metrics())
    return Adapted(summary, clip, previews, start.describe(), weights, device, base_path)


def before_after(clip, base, adapted, identity: np.ndarray, count: int = 2):
    """``count`` held-out frames of ``clip`` with the reference frame animated to each by
    ``base`` and by ``adapted``: a list of ``(frame, before, after)`` BGR crops."""
    from ..runtime.neural_animator import NeuralAnimator
    from ..train.personalize import held_out_indices

    ref = clip.reference
    size = clip.crops[ref].shape[0]
    portrait = SourcePortrait(crop=clip.crops[ref], landmarks=Landmarks(clip.points[ref], (size, size)), size=size,
                              image=clip.crops[ref], crop_to_image=np.eye(2, 3))
    held = held_out_indices(len(clip.crops), ref)
    picks = [held[round(k * (len(held) - 1) / max(1, count - 1))] for k in range(min(count, len(held)))]
    animators = [NeuralAnimator(portrait, model=m, identity=identity, device="cpu") for m in (base, adapted)]
    return [(clip.crops[i], *(a.animate(Landmarks(clip.points[i], (size, size))) for a in animators)) for i in picks]
