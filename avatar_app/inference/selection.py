"""Which backend runs: an explicit choice, or ``auto`` with every option passed over and why.

``auto`` tries TensorRT, then torch on CUDA (compiled, CUDA graphs), then ONNX Runtime,
then torch on the CPU.  A backend is passed over when it cannot run here
(:func:`~avatar_app.inference.backend.probe`) and TensorRT also until its first-use
self-test has passed on this GPU (:mod:`avatar_app.inference.selftest`); every reason is
logged, and ``doctor`` prints them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .backend import AUTO_ORDER, BACKEND_CHOICES, BackendUnavailable, probe

log = logging.getLogger(__name__)


@dataclass
class Choice:
    name: str
    rejected: list[tuple[str, str]]  # (backend, reason), in the order tried

    def explain(self) -> str:
        parts = [f"{n}: {r}" for n, r in self.rejected]
        return f"backend {self.name}" + (f" (passed over {'; '.join(parts)})" if parts else "")


def _self_test_reason(name: str) -> str | None:
    from .selftest import untrusted_reason

    return untrusted_reason(name)


def choose_backend(requested: str = "auto", probe_fn: Callable[[str], str | None] = probe,
                   trust_fn: Callable[[str], str | None] = _self_test_reason) -> Choice:
    """The backend to use for ``requested``, with every option passed over and why.

    ``trust_fn(name)``: why ``auto`` must not take a backend that can run (its self-test
    failed or has not run), or ``None``.  An explicit choice is taken as asked (no self-test);
    one that cannot run raises :class:`BackendUnavailable` with the reason.
    """
    if requested not in BACKEND_CHOICES:
        raise BackendUnavailable(f"Unknown backend '{requested}'; choose one of {', '.join(BACKEND_CHOICES)}.")
    if requested != "auto":
        reason = probe_fn(requested)
        if reason:
            raise BackendUnavailable(f"The {requested} backend cannot run here: {reason}.")
        return Choice(requested, [])
    rejected = []
    for name in AUTO_ORDER:
        reason = probe_fn(name)
        if reason is None:
            reason = trust_fn(name)
        if reason is None:
            choice = Choice(name, rejected)
            for n, r in rejected:
                log.info("backend auto: not %s: %s", n, r)
            log.info("backend auto: chose %s", name)
            return choice
        rejected.append((name, reason))
    raise BackendUnavailable("No inference backend can run here: " + "; ".join(f"{n}: {r}" for n, r in rejected) + ".")
