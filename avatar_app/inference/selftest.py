"""First-use self-test of a compiled backend on this GPU, and the verdicts remembered.

``--backend auto`` takes TensorRT only where it has been seen to work: the first time
TensorRT could be chosen on a GPU, every network of the lite model (the shipped weights,
else the untrained ones) is built, run once on example inputs and compared with fp32
torch.  The verdict — passed, or failed and why — is kept per GPU name and TensorRT
version in ``backend-verdicts.json`` in the engine cache folder (``engines clean`` leaves
it; delete it to test again), so later starts only read it.  A failed or missing verdict
makes ``auto`` pass over TensorRT with that reason, and ``doctor`` prints it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

VERDICTS = "backend-verdicts.json"
#: fp16 engines against fp32 torch: max |difference| / max |torch| per output (the GPU tests' bound)
TOLERANCE = 2e-2
SELF_TEST_PRESET, SELF_TEST_SIZE = "lite", 256


@dataclass
class Verdict:
    backend: str
    device: str  # the GPU's name
    version: str  # the backend library's version
    ok: bool
    detail: str  # "worst relative error 3.1e-03 (warp)" or why it failed
    when: str = ""
    seconds: float = 0.0
    count: int = 1  # measurements in a row that gave this result (the live-speed check settles "slow" on two)

    def explain(self) -> str:
        how = "passed" if self.ok else "failed"
        return f"self-test on {self.device} with {self.backend} {self.version} {how} ({self.detail}; {self.when})"


class VerdictStore:
    """Verdicts by backend, GPU and version, in one small JSON file (written atomically)."""

    def __init__(self, path: str | os.PathLike | None = None):
        if path is None:
            from .engine_cache import default_engine_dir

            path = default_engine_dir() / VERDICTS
        self.path = Path(path)

    def _read(self) -> dict[str, dict]:
        try:
            return dict(json.loads(self.path.read_text()).get("verdicts", {}))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("backend verdicts %s are unreadable (%s); self-tests will run again", self.path, exc)
            return {}

    @staticmethod
    def _key(backend: str, device: str, version: str) -> str:
        return f"{backend}|{device}|{version}"

    def get(self, backend: str, device: str, version: str) -> Verdict | None:
        entry = self._read().get(self._key(backend, device, version))
        try:
            return Verdict(**entry) if entry is not None else None
        except TypeError:  # written by another version of this file's format
            return None

    def has(self, backend: str) -> bool:
        """Whether any verdict of ``backend`` is kept (read without naming a GPU)."""
        return any(isinstance(e, dict) and e.get("backend") == backend for e in self._read().values())

    def forget(self, backend: str) -> int:
        """Drop every verdict of ``backend`` (the others stay); returns how many."""
        verdicts = self._read()
        kept = {k: e for k, e in verdicts.items() if not (isinstance(e, dict) and e.get("backend") == backend)}
        if len(kept) != len(verdicts):
            self._write(kept)
        return len(verdicts) - len(kept)

    def all(self, backend: str, device: str) -> list[Verdict]:
        """Every readable verdict of ``backend`` on ``device``, oldest first."""
        found = []
        for entry in self._read().values():
            try:
                v = Verdict(**entry)
            except TypeError:
                continue
            if v.backend == backend and v.device == device:
                found.append(v)
        return sorted(found, key=lambda v: v.when)

    def put(self, verdict: Verdict) -> None:
        verdicts = self._read()
        verdicts[self._key(verdict.backend, verdict.device, verdict.version)] = asdict(verdict)
        self._write(verdicts)

    def _write(self, verdicts: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"format": 1, "verdicts": verdicts}, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def self_test(backend: str, device: str, version: str, networks: Mapping, make_backend: Callable[[], object],
              tolerance: float = TOLERANCE) -> Verdict:
    """Load every network of ``networks`` on a fresh ``make_backend()``, run it once on example
    inputs and compare each output with fp32 torch's; any exception, non-finite value or error
    over ``tolerance`` fails the test, with the network and the reason."""
    from .export import relative_errors, torch_outputs
    from .networks import example_inputs

    t0 = time.perf_counter()

    def verdict(ok: bool, detail: str) -> Verdict:
        v = Verdict(backend, device, version, ok, detail, time.strftime("%Y-%m-%d %H:%M"),
                    round(time.perf_counter() - t0, 1))
        (log.info if ok else log.warning)("%s", v.explain())
        return v

    worst, where = 0.0, ""
    for name, network in networks.items():
        inputs = example_inputs(network.spec, 0)
        try:
            b = make_backend()
            b.load(network)
            got = {k: b.to_numpy(v) for k, v in b.run(inputs).items()}
        except Exception as exc:  # a build or run failure is the verdict, not a crash
            return verdict(False, f"{name}: {type(exc).__name__}: {exc}")
        errors = relative_errors(torch_outputs(network, inputs), got)
        for output, error in errors.items():
            if not math.isfinite(error):
                return verdict(False, f"{name}: output {output} is not finite")
            if error > tolerance:
                return verdict(False, f"{name}: output {output} is off by {error:.1e} of its range "
                                      f"(tolerance {tolerance:.0e})")
            if error >= worst:
                worst, where = error, f"{name} {output}"
    return verdict(True, f"worst relative error {worst:.1e} ({where}), {len(networks)} networks")


def tensorrt_identity() -> tuple[str, str]:
    """(GPU 0's name, TensorRT's version: ``rtx-1.7.1.116`` for TensorRT for RTX) — what a
    TensorRT verdict is kept under."""
    import pycuda.driver as cuda

    from .trt_api import load

    cuda.init()
    return cuda.Device(0).name(), load().key


def run_tensorrt_self_test(device: str, version: str) -> Verdict:
    """The self-test of the TensorRT backend (fp16) on this GPU, on the lite model at 256."""
    from ..models.shipped import start_model
    from .export import model_networks
    from .trt_backend import TensorRTBackend

    log.warning("TensorRT has not been tested on %s yet: building and checking the lite networks once "
                "(a few minutes; the verdict is remembered)", device)
    networks = model_networks(start_model(SELF_TEST_PRESET).model, SELF_TEST_SIZE)
    return self_test("tensorrt", device, version, networks, lambda: TensorRTBackend("fp16"))


#: the backends ``auto`` takes only after a passed self-test: name -> (identity, test)
SELF_TESTED: dict[str, tuple[Callable[[], tuple[str, str]], Callable[[str, str], Verdict]]] = {
    "tensorrt": (tensorrt_identity, run_tensorrt_self_test),
}


def check(backend: str, run: bool = True, store: VerdictStore | None = None) -> tuple[Verdict | None, str | None]:
    """``backend``'s verdict on this GPU (running the self-test first when there is none and
    ``run``) and why ``auto`` must pass over it (``None``: it passed, or needs no self-test)."""
    if backend not in SELF_TESTED:
        return None, None
    identity, test = SELF_TESTED[backend]
    try:
        device, version = identity()
    except Exception as exc:  # noqa: BLE001 - whatever stops us naming the GPU stops the test
        return None, f"cannot name the GPU and version to self-test ({type(exc).__name__}: {exc})"
    store = store or VerdictStore()
    verdict = store.get(backend, device, version)
    if verdict is None:
        if not run:
            return None, (f"not self-tested on {device} with {backend} {version} yet "
                          "(the first start with --backend auto tests it)")
        verdict = test(device, version)
        store.put(verdict)
    return verdict, None if verdict.ok else f"its {verdict.explain()}; delete {store.path} to test again"


def untrusted_reason(backend: str) -> str | None:
    """Why ``auto`` must pass over ``backend`` here, running its self-test on first use."""
    return check(backend)[1]
