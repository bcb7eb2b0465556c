"""How long one ``fit`` call trains: its speed, timed over its steps 11–40 (the first 10 compile), sets
the run's length from a time budget (``--time-budget``) and the step at which a call that must end in
time stops (``--stop-after``: a long run trained in shares on a machine lent for minutes at a time,
resumed in between)."""

from __future__ import annotations

import time

import torch
import torch.distributed as dist


class FitClock:
    WARM, TIMED = 10, 40  # steps of a call: compiling and warming up; timed from WARM to TIMED

    def __init__(self, step: int, device: torch.device, world: int = 1):
        self.t0, self.done0, self.t_warm = time.perf_counter(), step, None
        self.device, self.world = device, world

    def tick(self, step: int) -> None:
        """After each step (``step`` done): note when the warm-up ended."""
        if step - self.done0 == self.WARM:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.t_warm = time.perf_counter()

    def timed(self, step: int) -> bool:
        """Whether the speed has just become known (the call's step 40)."""
        return step == self.done0 + self.TIMED and self.t_warm is not None

    def rate(self, step: int, samples_per_step: int) -> float:
        """Samples a second since the call began."""
        return (step - self.done0) * samples_per_step / (time.perf_counter() - self.t0)

    def warm_rate(self, step: int, samples_per_step: int) -> float | None:
        """Samples a second after the warm-up (None before it)."""
        if self.t_warm is None or step - self.done0 <= self.WARM:
            return None
        return (step - self.done0 - self.WARM) * samples_per_step / (time.perf_counter() - self.t_warm)

    def step_at(self, seconds: float, step: int) -> int:
        """The step at which ``seconds`` after the call began run out, at the speed since the warm-up,
        with 3 % to spare (at least ``step + 1``).  Rank 0's figure holds for every rank: they must stop
        together (all_reduce, barriers)."""
        per_step = (time.perf_counter() - self.t_warm) / (step - self.done0 - self.WARM)
        left = seconds - (time.perf_counter() - self.t0)
        steps = max(step + 1, step + int(0.97 * left / per_step))
        if self.world > 1:
            shared = torch.tensor([steps], dtype=torch.int64,
                                  device=self.device if dist.get_backend() == "nccl" else "cpu")
            dist.broadcast(shared, 0)
            steps = int(shared.item())
        return steps
