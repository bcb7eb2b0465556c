"""What a wall-clock budget buys on this machine now: threads, step time, CPU share, steps.

Personalization's budget is wall-clock, so a machine busy with other work gets fewer steps.
Before the budget is spent, :func:`probe` times real adaptation steps with one thread and with
every core this process may use, keeps the faster (on a loaded machine one thread often wins:
a thread that waits for a busy core holds up the others at every barrier) and measures how much
of the cores it asked for the process really got.  :func:`plan_steps` turns that into the number
of steps the rest of the budget buys; :class:`Estimate` says it in one sentence.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

BUSY_SHARE = 0.75  # below this share of the CPU time asked for, the machine is busy with other work
# a first step with more threads this many times one thread's: their cores are not free, stop there (a core taken by
# other work: 15-21x).  1.5 until 2026-12-06: a first step on two threads also starts them (~40-60 ms here), and with
# the CPU plan's cheaper step (83-103 ms on one thread) that first step took 1.4-1.6x, so an idle 2-core machine
# personalized on one thread in 2 of 4 timed runs (30 CPU s of 60)
SLOW_TRIAL = 3.0

# Measured gain on the *later* segment of the two held-out people's clips (ls_demo3, vt_529) after
# that many steps, from the shipped weights: (preset, plan) -> [(steps, lowest dB, highest dB)].
# Sources: docs/PERSONALIZATION_WARP_LOSS.md (lite, CPU plan — batch 1 decaying, the warped source's L1 at 16, a 160
# px window decoded — from the shipped lite-real and the recording's rest frame, 2026-12-06: three timed 30 s runs per
# clip on two idle cores, 345-500 steps; 10-200 read off the runs' curves, the last point the lowest and highest of
# the runs' ends at the fewest steps any took) and
# docs/PERSONALIZATION_REAL_FACES.md (full, H200, batch 4, pairs drawn on the GPU: *Personalization within 10 s on a GPU*; the
# shipped full-real's curves from the recording's rest frame, 2026-12-04, one 10 s run per person, interpolated at these
# steps; from the first frame they were 1.01-1.15 / 1.30-1.41 / 1.55-1.92 / 1.69-2.30 / 1.68-2.07).  A key ending in "meta" is
# personalization from the shipped meta-learned start (models.shipped.SHIPPED_META), its gain counted from what the
# shipped weights score unpersonalized, as the app compares, from the recording's *rest frame* as the portrait (what
# the app takes since 2026-12-04): docs/PERSONALIZATION_WARP_LOSS.md, the loss at 16, batch 1, a 160 px window
# decoded (2026-12-06, *A decoded window*): seven timed 30 s runs per clip on two idle cores, 324-528 steps; 10-200
# read off four runs' curves per clip (part-way points of a run whose rate decays over all of it overstate what a
# budget ending there buys; 10 and 30 are the line from 0 to the first point, at 49-72 steps), the last point the
# lowest and highest of the runs' ends at the fewest steps any took.  Fewer steps than the first point: nothing is
# promised.  (The whole frame, before: +0.98-1.42 after 176-246 steps; batch 2 before that +0.94-1.37 after
# 131-142; at 0.5 +0.89-1.20 after 112-133, PERSONALIZATION_PLATEAU.md.)
# Between points: linear, which understates.
MEASURED_GAIN = {
    ("lite", "warp+decoder"): [(0, 0.0, 0.0), (10, 0.02, 0.19), (30, 0.06, 0.58), (60, 0.13, 0.92),
                               (100, 0.46, 1.02), (200, 0.72, 1.28), (345, 0.92, 1.42)],
    ("lite", "warp+decoder", "meta"): [(10, 0.10, 0.18), (30, 0.29, 0.55), (60, 0.58, 0.93), (100, 0.80, 1.07),
                                       (200, 1.08, 1.39), (324, 1.23, 1.44)],
    ("full", "full"): [(0, 0.0, 0.0), (25, 0.82, 1.16), (50, 0.99, 1.23), (100, 1.46, 1.65), (150, 1.78, 1.93),
                       (220, 1.84, 2.23)],
}


def expected_gain(preset: str, plan: str, steps: int, meta: bool = False) -> tuple[float, float, bool] | None:
    """``(low, high, beyond)``: the measured later-segment gain (dB) after ``steps`` steps,
    interpolated linearly; ``beyond``: more steps than were measured (then at least the last
    figures).  ``meta``: from the meta-learned start.  ``None`` where this was not measured (fewer steps than
    the first point, too)."""
    points = MEASURED_GAIN.get((preset, plan, "meta") if meta else (preset, plan))
    if points is None or steps < points[0][0]:
        return None
    last = points[-1]
    if steps >= last[0]:
        return last[1], last[2], steps > last[0]
    (s0, lo0, hi0), (s1, lo1, hi1) = next((a, b) for a, b in zip(points, points[1:]) if a[0] <= steps < b[0])
    t = (steps - s0) / (s1 - s0)
    return lo0 + t * (lo1 - lo0), hi0 + t * (hi1 - hi0), False


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Timing:
    threads: int
    step_s: float  # wall seconds per step
    cpu_share: float  # CPU seconds this process got / (wall seconds × threads)


@dataclass(frozen=True)
class Estimate:
    """What the budget buys, measured before it is spent (``device``: where the steps run)."""

    budget_s: float
    spent_s: float  # of the budget, already gone (preparation, the probe's own steps)
    done: int  # steps the probe already took
    timing: Timing
    device: str = "cpu"
    gain: tuple[float, float, bool] | None = None  # :func:`expected_gain` for the steps estimated

    @property
    def steps(self) -> int:
        return plan_steps(self.budget_s, self.spent_s, self.timing.step_s, self.done)

    @property
    def busy(self) -> bool:
        return self.device == "cpu" and self.timing.cpu_share < BUSY_SHARE

    def message(self) -> str:
        t = self.timing
        where = (f"{t.threads} CPU thread{'s' * (t.threads > 1)}" if self.device == "cpu" else self.device)
        text = (f"{1 / t.step_s:.1f} steps/s on {where} now: the {self.budget_s:.0f} s budget buys about "
                f"{self.steps} steps")
        if self.gain is not None:
            low, high, beyond = self.gain
            least = f"{math.floor(low * 10 + 1e-9) / 10:.1f}" if beyond else f"{low:.1f}"  # "at least": never up
            span = least if least == f"{high:.1f}" else f"{least}-{high:.1f}"
            text += (f"; on two people the model never saw, {'more than ' if beyond else ''}that many steps raised "
                     f"the frames after the recording by {'at least ' if beyond else 'about '}{span} dB "
                     "over the unpersonalized model")
        if self.busy:
            text += (f"; the machine is busy with other work (this process gets {100 * t.cpu_share:.0f} % of the CPU "
                     f"it asks for), so the budget buys fewer steps than on an idle machine")
        return text


def plan_steps(budget_s: float, spent_s: float, step_s: float, done: int = 0) -> int:
    """Steps taken in all when the ``budget_s - spent_s`` seconds left run at ``step_s`` each, after ``done``."""
    if step_s <= 0:
        raise ValueError("step time must be positive")
    return done + max(0, math.floor((budget_s - spent_s) / step_s))


def time_steps(step: Callable[[], None], n: int, threads: int, over: Callable[[], bool] = lambda: False) -> Timing:
    """Run ``step`` ``n`` times (fewer once ``over()``) with ``threads`` torch threads; wall time per
    step and the CPU share."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    done = 0
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        while done < n and not (done and over()):
            step()
            done += 1
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        torch.set_num_threads(before)
    return Timing(threads, wall / done, min(1.0, cpu / max(wall * threads, 1e-9)))


def probe(step: Callable[[], None], cores: int | None = None, n: int = 2,
          over: Callable[[], bool] = lambda: False, load: Callable[[], float] | None = None,
          n_more: int = 4) -> tuple[Timing, int]:
    """Time ``step`` (one adaptation step, run for real) ``n`` times with one thread after a warm-up step, then,
    if that thread had a core to itself and more than one core is free of other runnable work
    (``load``: runnable threads, our own included; default :func:`runnable_now`),
    with as many threads as cores are free (:func:`spare_threads`): one untimed step, then (unless that one took more
    than :data:`SLOW_TRIAL` × one thread's time) ``n_more`` timed; returns the faster timing and how many steps ran.
    (``n_more`` is larger than ``n``: when more threads are kept, those steps ran at the run's own speed, so timing
    more of them costs nothing.  On a shared 2-core machine one step differs from the next by about ±10 %, at times
    +40 %: two steps' mean put 2 of 6 estimates 21-22 % off what 30 s bought, where over three 90-step series the
    mean of 4 consecutive steps was never more than 19 % off the series' mean, and that of 2 was more than 20 % off
    in 4 of the 258 places a window started.)  (More
    threads are not tried on a busy machine: there each barrier waits for a thread that waits for a
    core, and a step can take many times longer — measured here with one core taken by other work:
    9.8 s a step on two threads against 0.46 s on one.)  Stops early once ``over()`` (the budget is
    spent)."""
    if n < 1 or n_more < 1:
        raise ValueError(f"the probe times at least one step each way (n={n}, n_more={n_more})")
    cores = cores or usable_cores()
    ran = []

    def counted() -> None:
        ran.append(1)
        step()

    warm = time_steps(counted, 1, 1)
    if over():
        return warm, len(ran)
    timings = [time_steps(counted, n, 1, over)]
    others = (load or runnable_now)() - 1.0  # runnable work besides this process's one thread
    threads = spare_threads(cores, others)
    if threads > 1 and timings[0].cpu_share >= BUSY_SHARE and not over():
        # a thread count's first step starts its threads and kernels (measured on 2 cores: 0.50 s, then 0.36-0.43
        # s a step; timed with the steady ones it put the estimate 21 % under what 30 s bought), so it is not timed
        first = time_steps(counted, 1, threads)
        if first.step_s <= SLOW_TRIAL * timings[0].step_s and not over():
            timings.append(time_steps(counted, n_more, threads, over))
    return min(timings, key=lambda t: t.step_s), len(ran)


def spare_threads(cores: int, others: float) -> int:
    """Threads that each get a core of their own: ``cores`` less the runnable work besides ours
    (``others``, from the load average), rounded; at least 1."""
    return max(1, min(cores, int(cores - max(others, 0.0) + 0.5)))


def runnable_now(samples: int = 20, every_s: float = 0.005) -> float:
    """Threads runnable on the machine now, the calling one included: the mean of the kernel's running
    count (``/proc/loadavg``) over ``samples`` readings ``every_s`` apart (Linux); elsewhere the 1-minute
    load average.  Not the load average where there is a choice: it remembers this process's own last
    minute, and the recording (tracking) or a personalization just before counted as "other work" that
    kept the probe from trying a second thread (measured: two 30 s runs back to back, the second
    probed 1 thread and ran 68 steps where the first ran 102)."""
    try:
        counts = []
        for _ in range(samples):
            with open("/proc/loadavg", encoding="ascii") as f:
                counts.append(int(f.read().split()[3].split("/")[0]))
            time.sleep(every_s)
        return sum(counts) / len(counts)
    except (OSError, ValueError, IndexError):
        return _load_average()


def _load_average() -> float:
    """The 1-minute load average (0 where the OS has none: Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0
