"""Cheap personalization (issue 14): cached adaptation, the budget probe and small profiles."""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_app.errors import InputFileError
from avatar_app.models.portrait import PortraitModel, load_checkpoint, save_checkpoint
from avatar_app.models.shipped import shipped_weights
from avatar_app.train.adapt_cached import FULL_PLANS, PLANS, FrameCache, adapted_parameters
from avatar_app.train.budget import BUSY_SHARE, Estimate, Timing, plan_steps, probe, spare_threads
from avatar_app.train.config import TrainConfig
from avatar_app.train.inputs import FrameFlowInputs
from avatar_app.train.recording_pairs import FramePairs
from avatar_app.train.personalize import CPU_PLAN, auto_plan, personalize
from avatar_app.train.trainer import Trainer

from test_meta import _animated_clip, _cast_clip, _tiny

torch.set_num_threads(1)


def _trained_like(seed: int = 1) -> PortraitModel:
    """The tiny model with every weight moved off its (near-identity) start, so each stage matters."""
    model = _tiny()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("start", [0, 1, 2, 3])
def test_decoding_from_a_cached_stage_is_the_whole_generator(start):
    gen = _trained_like().generator.eval()
    g = torch.Generator().manual_seed(0)
    feats = [torch.rand(2, c, s, s, generator=g) for c, s in ((4, 128), (8, 64), (8, 32))]
    grid = torch.rand(2, 256, 256, 2, generator=g) * 1.8 - 0.9
    occ, cond = torch.rand(2, 1, 256, 256, generator=g), torch.rand(2, 6, 256, 256, generator=g)
    ident, src = torch.randn(2, 128, generator=g), torch.rand(2, 3, 256, 256, generator=g)
    with torch.no_grad():
        whole, mask = gen(feats, grid, occ, cond, ident, src)
        warped = gen.warp_features(feats, grid, occ)
        h = None
        for k in range(1, start + 1):
            h = gen.stage(k, h, warped, cond, ident)
        part, part_mask = gen.decode(warped, cond, ident, src, start, h)
    assert torch.equal(part, whole) and torch.equal(part_mask, mask)


def test_the_cache_grows_the_loss_regions_once_exactly_as_the_loss_would(astronaut_source):
    from avatar_app.train.losses import grow_regions

    clip, ident = _cast_clip(astronaut_source), np.zeros(128, np.float32)
    cache = FrameCache(_tiny(), clip, [3, 7, 11], ident, -1, chunk=2)
    b = cache.batch([0, 1, 2])
    assert torch.equal(b["regions"], grow_regions(b["cond"][:, 3:5]))  # eyes and mouth, bit for bit
    assert 0 < float((b["regions"] > 0).float().mean()) < 1 and not torch.equal(b["regions"], b["cond"][:, 3:5])
    trainer = Trainer(TrainConfig(stage="meta", num_workers=0, w_gan=0.0, amp=False), None, train_set=[], model=_tiny())
    out = b["driving"].flip(-1)  # any image unlike the truth
    grown = trainer._image_losses(out, b["driving"], b["cond"], regions=b["regions"])
    here = trainer._image_losses(out, b["driving"], b["cond"])
    assert grown.keys() == here.keys() and all(torch.equal(grown[k], here[k]) for k in here)
    assert float(here["eyes"]) > 0 and float(here["mouth"]) > 0


@pytest.mark.parametrize("plan", sorted(PLANS))
def test_a_plan_adapts_only_its_parameters(astronaut_source, plan):
    base = _tiny()
    result = personalize(_cast_clip(astronaut_source), base, np.zeros(128, np.float32), budget_s=600, lr=3e-3,
                         plan=plan, max_steps=8)
    chosen = set(adapted_parameters(base, PLANS[plan]))
    assert result.adapted == sorted(chosen) and result.steps == 8 and result.plan == plan
    if plan == CPU_PLAN:  # the CPU probe's steps count towards max_steps too (it took three whatever the cap)
        assert personalize(_cast_clip(astronaut_source), base, np.zeros(128, np.float32), budget_s=600,
                           plan=plan, max_steps=2).steps == 2
    after, before = dict(result.model.named_parameters()), dict(base.named_parameters())
    changed = {n for n in before if not torch.equal(after[n], before[n])}
    assert changed and changed <= chosen, changed - chosen
    assert all(p.requires_grad for p in result.model.parameters())  # handed back as a normal model


def test_the_cpu_plan_leaves_the_decoders_spade_branch_as_it_is():
    """Its convolutions at 128 px then need no backward: a step 12-21 % cheaper, as much gained per step
    (docs/PERSONALIZATION_ROUNDS.md); a plan that adapts every weight cannot leave any."""
    from dataclasses import replace

    base = _tiny()
    chosen = set(adapted_parameters(base, PLANS["warp+decoder"]))
    left = set(adapted_parameters(base, replace(PLANS["warp+decoder"], frozen=()))) - chosen
    assert left and all(".spade." in n or ".shared." in n for n in left)
    assert not any(".spade." in n or ".shared." in n for n in chosen)
    assert any(".adain." in n or ".attention." in n for n in chosen)  # the rest of the normalisation still adapts
    with pytest.raises(ValueError, match="cached plans"):
        replace(FULL_PLANS["full"], frozen=(".spade.",))


def test_from_a_meta_learned_start_before_is_the_base_and_the_start_is_what_adapts(astronaut_source):
    """personalize(start=...): the weights adapted are the start's; "before" and a curve's first point score
    base (the model the app animates with unpersonalized), and the gain promised is the meta start's."""
    clip, ident = _cast_clip(astronaut_source), np.zeros(128, np.float32)
    base, meta = _tiny(), _trained_like(seed=2)
    plain = personalize(clip, base, ident, budget_s=600, plan="decoder", max_steps=2)
    from avatar_app.train.personalize import frame_items, held_out_indices

    again = frame_items(clip, [(clip.reference, i) for i in held_out_indices(len(clip.crops))], ident)
    from_meta = personalize(clip, base, ident, budget_s=600, plan="decoder", max_steps=2, curve_every_steps=1,
                            start=meta, also_score={"again": again})
    assert from_meta.before["psnr"] == plain.before["psnr"] == from_meta.curve[0]["psnr"]
    assert from_meta.before["again_psnr"] == pytest.approx(plain.before["psnr"])  # also scored on base
    adapted, m = dict(from_meta.model.named_parameters()), dict(meta.named_parameters())
    untouched = [n for n in m if n not in set(from_meta.adapted)]
    assert untouched and all(torch.equal(adapted[n], m[n]) for n in untouched)  # the start's, not base's
    assert not torch.equal(adapted[untouched[0]], dict(base.named_parameters())[untouched[0]])
    from avatar_app.train.budget import expected_gain
    assert expected_gain("lite", "warp+decoder", 60, meta=True) != expected_gain("lite", "warp+decoder", 60)


def test_cached_personalization_lowers_heldout_loss(astronaut_source):
    # a fixed number of steps, so the result does not depend on how busy the machine is
    result = personalize(_cast_clip(astronaut_source), _tiny(), np.zeros(128, np.float32), budget_s=600,
                         batch_size=2, lr=3e-3, plan="decoder", max_steps=30)
    assert result.after["l1"] < 0.99 * result.before["l1"], (result.before, result.after)
    assert result.after["psnr"] > result.before["psnr"] + 0.05, (result.before, result.after)


@pytest.mark.parametrize("kind", ["cached", "full"])
def test_a_decaying_plan_lowers_its_rate_to_nothing_at_the_steps_the_budget_buys(astronaut_source, kind):
    from avatar_app.train.personalize import _cached_steps, _full_steps

    model, clip = _tiny(), _cast_clip(astronaut_source)
    trainer = Trainer(TrainConfig(stage="meta", batch_size=2, num_workers=0, w_gan=0.0, amp=False), None,
                      train_set=[], device="cpu", model=model)
    train_idx = list(range(1, len(clip.crops)))
    if kind == "cached":
        plan = replace(PLANS["warp+decoder"], decay=True)
        step, _ = _cached_steps(trainer, model, clip, train_idx, np.zeros(128, np.float32), plan, 2, 3e-3, 8, "cpu", 0)
    else:  # the GPU's plan (here on the CPU): every warp and generator weight on random pairs
        pairs = FrameFlowInputs(FramePairs(clip, train_idx, np.zeros(128, np.float32), 0))
        step, _ = _full_steps(trainer, model, pairs, 2, 3e-3, 0.1, decay=True)

    def moved(done: int, horizon: int | None) -> bool:
        before = [p.detach().clone() for p in model.parameters()]
        step(done, horizon)
        return any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))

    assert moved(0, None) and moved(0, 4) and moved(3, 4)  # (None: the probe's steps, before the estimate)
    assert not moved(4, 4) and not moved(6, 4)


def test_the_plan_follows_the_device():
    assert auto_plan("cuda") == "full" and auto_plan("cuda:1") == "full"  # a GPU: every weight
    assert auto_plan("cpu") in PLANS  # a CPU: a cached plan


def test_plan_steps_spends_the_rest_of_the_budget():
    assert plan_steps(30.0, 6.0, 0.5, done=5) == 5 + 48
    assert plan_steps(30.0, 6.0, 0.7, done=5) == 5 + 34  # floor: a step that would end past the budget is not promised
    assert plan_steps(30.0, 31.0, 0.5, done=5) == 5  # the probe already spent it
    with pytest.raises(ValueError):
        plan_steps(30.0, 1.0, 0.0)


def test_expected_gain_follows_the_measured_curve():
    from avatar_app.train.budget import MEASURED_GAIN, expected_gain

    points = MEASURED_GAIN[("lite", "warp+decoder")]
    (s0, lo0, hi0), (s1, lo1, hi1) = points[1], points[2]
    low, high, beyond = expected_gain("lite", "warp+decoder", (s0 + s1) // 2)
    assert low == pytest.approx((lo0 + lo1) / 2) and high == pytest.approx((hi0 + hi1) / 2) and not beyond
    last, lo, hi = points[-1]
    assert expected_gain("lite", "warp+decoder", last + 50) == (lo, hi, True)  # never extrapolated upwards
    assert expected_gain("lite", "warp+decoder", 0)[:2] == (0.0, 0.0)
    assert expected_gain("lite", "head", 40) is None  # not measured: nothing is promised
    assert expected_gain("lite", "warp+decoder", 5, meta=True) is None  # fewer steps than the curve's first
    text = Estimate(30.0, 4.0, 5, Timing(1, 0.5, 0.9), gain=(lo, hi, True)).message()
    shown = re.search(r"at least ([\d.]+)-([\d.]+) dB", text)
    assert shown and float(shown[1]) <= lo < float(shown[1]) + 0.1 and shown[2] == f"{hi:.1f}"  # the low never up
    floor = Estimate(30.0, 4.0, 5, Timing(1, 0.5, 0.9), gain=(0.75, 1.36, True)).message()
    assert "at least 0.7-1.4 dB" in floor  # "at least 0.8" would promise more than was measured
    same = Estimate(30.0, 4.0, 5, Timing(1, 0.5, 0.9), gain=(1.48, 1.52, False)).message()
    assert "about 1.5 dB" in same  # one figure where both round alike, not "1.5-1.5"


def test_the_estimate_says_when_the_machine_is_busy():
    idle = Estimate(30.0, 4.0, 5, Timing(2, 0.25, 0.97))
    busy = Estimate(30.0, 4.0, 5, Timing(1, 0.5, BUSY_SHARE - 0.2))
    assert not idle.busy and idle.steps == 5 + 104 and "4.0 steps/s on 2 CPU threads" in idle.message()
    assert busy.busy and busy.steps == 5 + 52 and "busy" in busy.message() and "55 %" in busy.message()
    assert not Estimate(30.0, 4.0, 5, Timing(0, 0.1, 0.0), device="cuda").busy  # a GPU step waits on the GPU


def test_the_probe_keeps_the_faster_thread_count_and_measures_the_cpu_share():
    """A step that waits instead of computing (as a process starved of CPU does) shows a low CPU share,
    and the probe then keeps one thread."""
    calls = []

    def waiting_step():
        calls.append(torch.get_num_threads())
        time.sleep(0.02)

    waiting, steps = probe(waiting_step, cores=2, n=2)
    assert steps == 3 and calls == [1, 1, 1]  # no core to itself: more threads are not tried
    assert waiting.threads == 1 and 0.015 < waiting.step_s < 0.05 and waiting.cpu_share < BUSY_SHARE
    assert probe(waiting_step, cores=2, n=2, over=lambda: True)[1] == 1  # the budget is spent: warm-up only

    def computing_step():
        a = torch.rand(256, 256)
        end = time.perf_counter() + 0.03
        while time.perf_counter() < end:
            a = a @ a.T / 256

    computing, _ = probe(computing_step, cores=1, n=2)
    assert computing.threads == 1 and computing.cpu_share > 2 * waiting.cpu_share  # (how much depends on the load)


def _own_core(monkeypatch) -> None:
    """The steps below busy-wait on the wall clock: their CPU share is whatever the machine's load
    leaves them, and a share under ``BUSY_SHARE`` rightly stops the probe from trying more threads.
    These tests are about what it does with the load average, so each step has its core."""
    monkeypatch.setattr(time, "process_time", time.perf_counter)


def test_the_probe_tries_more_threads_only_on_an_idle_machine_and_stops_a_slower_trial(monkeypatch):
    _own_core(monkeypatch)
    calls = []

    def step():  # computes for one thread; with more, waits as a thread whose core is busy does
        calls.append(torch.get_num_threads())
        end = time.perf_counter() + (0.02 if calls[-1] == 1 else 0.2)
        while time.perf_counter() < end:
            pass

    timing, steps = probe(step, cores=2, n=2, load=lambda: 3.0)  # other work runnable: one thread only
    assert steps == 3 and calls == [1, 1, 1] and timing.threads == 1
    calls.clear()
    timing, steps = probe(step, cores=2, n=2, load=lambda: 1.0)  # only this process: tried, stopped after a step
    assert steps == 4 and calls == [1, 1, 1, 2] and timing.threads == 1


def test_the_probe_keeps_more_threads_whose_first_step_only_starts_them(monkeypatch):
    """Starting the threads costs a cheap step's first one about as much as the step itself (measured: 83-103 ms on
    one thread, 124-147 ms the first on two, then 56-87): that is not a busy core, and the faster count is kept."""
    _own_core(monkeypatch)
    calls = []

    def step():
        calls.append(torch.get_num_threads())
        first_of_two = calls[-1] == 2 and calls.count(2) == 1
        end = time.perf_counter() + (0.02 if calls[-1] == 1 else 0.04 if first_of_two else 0.012)
        while time.perf_counter() < end:
            pass

    timing, steps = probe(step, cores=2, n=2, load=lambda: 1.0)
    assert steps == 8 and timing.threads == 2 and timing.step_s < 0.018


@pytest.mark.skipif(not Path("/proc/loadavg").is_file(), reason="reads Linux's /proc/loadavg")
def test_runnable_now_counts_other_work_running_now_not_over_the_last_minute():
    """The probe's view of other work: threads runnable at this moment (a busy process counts, our own
    reading thread too), not the load average, which remembers this process's own last minute."""
    import subprocess
    import sys

    from avatar_app.train.budget import runnable_now

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert runnable_now() >= 1.9  # the spinning process and this thread, in every reading
    finally:
        busy.kill()
        busy.wait()


def test_the_probe_does_not_time_the_first_step_of_more_threads(monkeypatch):
    """A thread count's first step starts its threads (on two cores: 0.50 s, then 0.36-0.43 s): timed with the
    steady ones it made the estimate 21 % short of what 30 s bought."""
    _own_core(monkeypatch)
    calls = []

    def step():  # one thread 0.04 s; two threads 0.045 s on their first step (over one thread's), then 0.01 s
        calls.append(torch.get_num_threads())
        first_of_two = calls[-1] == 2 and calls.count(2) == 1
        end = time.perf_counter() + (0.04 if calls[-1] == 1 else 0.045 if first_of_two else 0.01)
        while time.perf_counter() < end:
            pass

    timing, steps = probe(step, cores=2, n=2, load=lambda: 1.0)  # 4 timed with two threads: the steps the run takes
    assert steps == 8 and calls == [1, 1, 1, 2, 2, 2, 2, 2] and timing.threads == 2
    assert timing.step_s < 0.025  # the steady steps (0.01 s), not the first (0.045 s)
    calls.clear()
    assert probe(step, cores=2, n=2, n_more=3, load=lambda: 1.0)[1] == 7 and calls.count(2) == 4
    with pytest.raises(ValueError, match="at least one step"):
        probe(step, cores=2, n_more=0)


def test_the_probe_uses_the_cores_other_work_leaves_and_keeps_more_threads_when_faster(monkeypatch):
    """Other runnable work takes cores, not the whole machine: with 2 runnable besides this process
    on 8 cores the trial runs on the 6 left, and keeps them when they are faster."""
    _own_core(monkeypatch)
    calls = []

    def step():  # faster with more threads, as a step that has cores of its own is
        calls.append(torch.get_num_threads())
        end = time.perf_counter() + (0.03 if calls[-1] == 1 else 0.01)
        while time.perf_counter() < end:
            pass

    timing, steps = probe(step, cores=8, n=2, load=lambda: 3.0)
    assert steps == 8 and calls == [1, 1, 1, 6, 6, 6, 6, 6] and timing.threads == 6
    assert [spare_threads(2, x) for x in (-0.2, 0.4, 0.6, 1.0, 5.0)] == [2, 2, 1, 1, 1]


def test_estimate_and_progress_of_a_budgeted_run(astronaut_source):
    estimates, infos = [], []
    result = personalize(_animated_clip(astronaut_source, n=20), _tiny(), np.zeros(128, np.float32), budget_s=3.0,
                         batch_size=2, plan="late", on_estimate=estimates.append, progress=infos.append)
    (est,) = estimates
    assert result.estimate is est and est.steps >= est.done  # (fewer: a busy machine)
    assert 1 <= est.done <= 1 + 2 + 1 + 4  # the probe: a warm-up, 2 on one thread, 1 + 4 on more threads
    assert all(i["expected_steps"] == est.steps for i in infos[est.done:])
    assert [i["step"] for i in infos] == list(range(1, result.steps + 1))
    assert result.metrics()["estimated_steps"] == est.steps and result.metrics()["plan"] == "late"


# ------------------------------------------------------------------------- small profiles

def test_a_delta_checkpoint_holds_only_the_adapted_weights(tmp_path):
    base_path = save_checkpoint(_tiny(), tmp_path / "base.safetensors")
    adapted = _trained_like()
    names = sorted(adapted_parameters(adapted, PLANS["late"]))
    with torch.no_grad():  # what adaptation leaves: the base, with only the adapted weights changed
        expected = load_checkpoint(base_path)
        for n, p in expected.named_parameters():
            if n in names:
                p.copy_(dict(adapted.named_parameters())[n])
    delta = save_checkpoint(expected, tmp_path / "delta.safetensors", base=base_path, keys=names)
    assert delta.stat().st_size < 0.5 * base_path.stat().st_size
    loaded = load_checkpoint(delta)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), expected.state_dict().values()))
    save_checkpoint(_trained_like(seed=2), base_path)  # the base changed since: said, not silently wrong
    with pytest.raises(InputFileError, match="other weights"):
        load_checkpoint(delta)
    base_path.unlink()
    with pytest.raises(InputFileError, match="not on this machine"):
        load_checkpoint(delta)


@pytest.mark.skipif(shipped_weights("lite") is None, reason="the shipped lite weights are not installed")
def test_a_profile_over_shipped_weights_moves_between_machines(tmp_path):
    """A profile adapted from shipped weights names them, not a path: copied elsewhere, it still loads."""
    from avatar_app.profiles import load_profile, load_weights, save_profile

    base = load_checkpoint(shipped_weights("lite"))
    names = sorted(adapted_parameters(base, PLANS["decoder"]))
    with torch.no_grad():
        for n, p in base.named_parameters():
            if n in names:
                p.mul_(1.01)
    image = np.full((64, 64, 3), 128, np.uint8)
    save_profile("me", base, image, root=tmp_path / "a", base=shipped_weights("lite"), adapted=names)
    whole = save_profile("whole", base, image, root=tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere")
    profile = load_profile("me", root=tmp_path / "elsewhere")
    assert profile.weights_path.stat().st_size < 0.5 * whole.weights_path.stat().st_size  # only those, in fp16
    loaded, want = load_weights(profile).state_dict(), base.state_dict()
    for name, value in want.items():  # the adapted weights to fp16 precision, the rest exactly the base's
        assert torch.allclose(loaded[name], value, rtol=1e-3, atol=1e-6) if name in names else torch.equal(
            loaded[name], value), name


def test_personalize_runs_a_full_plan_with_its_own_settings(astronaut_source, monkeypatch):
    """A :data:`FULL_PLANS` variant (``--variant fulld=full:decay=1``) reaches the steps with its decay, rate and
    warp rate scale, unless the call gives its own."""
    from avatar_app.train import personalize as p
    from avatar_app.train.adapt_cached import FULL_PLANS

    seen = []
    steps = p.full_steps

    def spy(trainer, model, draw, batch_size, lr, warp_lr_scale, decay=False):
        seen.append((batch_size, lr, warp_lr_scale, decay))
        return steps(trainer, model, draw, batch_size, lr, warp_lr_scale, decay)

    monkeypatch.setattr(p, "full_steps", spy)
    monkeypatch.setitem(FULL_PLANS, "fulld", replace(FULL_PLANS["full"], name="fulld", decay=True, lr=2e-4,
                                                     warp_lr_scale=0.5, batch_size=2))
    clip = _cast_clip(astronaut_source)
    for plan, kwargs in (("fulld", {}), ("full", {}), ("fulld", {"lr": 1e-3, "warp_lr_scale": 0.2})):
        result = personalize(clip, _tiny(), np.zeros(128, np.float32), budget_s=600, plan=plan, max_steps=2, **kwargs)
        assert result.plan == plan and result.steps == 2
    assert seen == [(2, 2e-4, 0.5, True), (4, 1e-4, 0.1, False), (2, 1e-3, 0.2, True)]
