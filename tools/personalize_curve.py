"""The personalization curve (issue 12): how fast each starting point adapts to a person it never saw.

For each clip (default: the longest clips of the validation people, split as training splits them):
the first ``--record`` seconds are what personalization gets, as the app would record them (every 10th
frame held out and scored: "interleaved"); the seconds after it, up to as many again, are the *later*,
unseen segment, scored on ``--later-frames`` frames spread over it.  Each start (``NAME=WEIGHTS``;
``NAME=`` for the untrained model) is personalized for ``--budget`` seconds on ``--device`` with the
app's own :func:`~avatar_app.train.personalize.personalize`, scored every ``--every`` training seconds.
Frames are the prepared 256 crops and landmarks; PSNR over the whole crop, as personalization scores.
Every frame is animated from the recording's first frame (``--reference first``, as every figure before
2026-12-04), or from the frame the app takes since then (``--reference rest``: ``retarget.rest_frame``).

    python tools/personalize_curve.py --data PREPARED --start meta=M.safetensors base=B.safetensors untrained= \
        --budget 30 --every 3 --device cuda --out curve.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar_app.face.retarget import rest_frame  # noqa: E402
from avatar_app.models.portrait import PortraitModel, load_checkpoint  # noqa: E402
from avatar_app.models.shipped import untrained_model  # noqa: E402
from avatar_app.train.manifest import read_manifest  # noqa: E402
from avatar_app.train.split import split_clips  # noqa: E402
from avatar_app.train.eval_clips import load_clip  # noqa: E402
from avatar_app.train.adapt_cached import FULL_PLANS, PLANS, Plan  # noqa: E402
from avatar_app.train.personalize import ClipFrames, frame_items, personalize  # noqa: E402


def segments(clip, fps: float, record_s: float, later_frames: int) -> tuple[list[int], list[int]]:
    """Valid frame indices of the recording (at most ``record_s``, at most half the clip) and of the later
    segment (as long again at most), ``later_frames`` of them spread evenly."""
    valid = np.flatnonzero(clip.valid)
    n = min(int(round(record_s * fps)), len(valid) // 2)
    record, rest = valid[:n], valid[n:2 * n]
    picks = np.linspace(0, len(rest) - 1, min(later_frames, len(rest))).round().astype(int)
    return record.tolist(), rest[picks].tolist()


def start_model(weights: str, preset: str) -> PortraitModel:
    """The checkpoint ``weights``, or the untrained ``preset`` model when it is empty (``NAME=``)."""
    return load_checkpoint(weights) if weights else untrained_model(preset)


def start_models(spec: str, preset: str, device: str) -> tuple[PortraitModel, PortraitModel | None]:
    """``(base, start)`` of a ``--start`` value: ``WEIGHTS`` adapts those weights (``start`` None);
    ``META@BASE`` adapts ``META`` while "before" (the curve's first point) scores ``BASE``, as the app
    does from its shipped meta-learned start (``personalize(start=)``)."""
    meta, _, base = spec.partition("@")
    if not base:
        return start_model(meta, preset).to(device), None
    return start_model(base, preset).to(device), start_model(meta, preset).to(device)


def plan_variant(name: str, spec: str) -> Plan:
    """``PLAN:FIELD=VALUE,...``: the plan ``PLAN`` with those fields of :class:`Plan` changed, named ``name``."""
    base, _, changes = spec.partition(":")
    kinds = {f.name: f.type for f in fields(Plan)}
    values = {}
    for change in filter(None, changes.split(",")):
        key, _, value = change.partition("=")
        if key not in kinds or key == "name":
            raise SystemExit(f"--variant {name}: {key!r} is not a field of Plan ({', '.join(sorted(kinds))})")
        convert = {"int": int, "float": float, "str": str, "bool": lambda v: v.lower() in ("1", "true", "yes"),
                   "tuple[str, ...]": lambda v: tuple(filter(None, v.split("+")))}  # frozen=.spade.+.shared. (or none)
        values[key] = convert[str(kinds[key])](value)
    plans = PLANS | FULL_PLANS
    if base not in plans:
        raise SystemExit(f"--variant {name}: {base!r} is not a plan ({', '.join(sorted(plans))})")
    try:
        return replace(plans[base], name=name, **values)
    except ValueError as e:  # a combination Plan refuses (decode=0 on a plan that decodes, ...)
        raise SystemExit(f"--variant {name}: {e}") from None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a prepared dataset")
    p.add_argument("--start", nargs="+", required=True, metavar="NAME=WEIGHTS", help="starting points ('NAME=': untrained; "
                   "'NAME=META@BASE': adapt META, score 'before' on BASE, as from the app's meta-learned start)")
    p.add_argument("--clips", nargs="*", help="clip keys (default: the --count longest validation clips)")
    p.add_argument("--count", type=int, default=2)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--preset", default="full", choices=("lite", "full"))
    p.add_argument("--record", type=float, default=10.0, help="seconds recorded for personalization (default 10)")
    p.add_argument("--later-frames", type=int, default=48)
    p.add_argument("--budget", type=float, default=30.0)
    p.add_argument("--every", type=float, default=3.0, help="score every so many seconds of the budget")
    p.add_argument("--steps", type=int, default=None,
                   help="run exactly this many steps instead of a budget (load-independent comparisons)")
    p.add_argument("--every-steps", type=int, default=None, help="with --steps: score every so many steps")
    p.add_argument("--batch-size", type=int, default=None, help="default: the plan's")
    p.add_argument("--plans", nargs="+", default=["auto"], help="personalization plans to compare (default: auto)")
    p.add_argument("--lr", type=float, default=None, help="default: the plan's")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on a GPU")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds of personalization run once before any measurement, not scored (default: 3 on a GPU, "
                        "0 on a CPU): a process's first GPU steps load kernels, which a measurement should not count")
    p.add_argument("--variant", nargs="+", default=[], metavar="NAME=PLAN:FIELD=VALUE,...",
                   help="a plan to compare made from another by changing fields of its Plan (e.g. "
                        "b2=warp+decoder:batch_size=2,lr=6e-4,decay=1, or fulld=full:decay=1); then name it in --plans")
    p.add_argument("--cache-frames", type=int, default=None,
                   help="training frames a cached plan computes inputs for (default: personalize's, 48)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0],
                   help="personalize each start once per seed (the order its pairs are drawn in); with more than one "
                        "seed the runs are named NAME#SEED, and the curves' spread shows how much of a gap is noise")
    p.add_argument("--reference", choices=("first", "rest"), default="first",
                   help="the portrait every frame is animated from: the recording's first frame, or its rest frame "
                        "(what the app takes)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    for spec in args.variant:
        name, _, rest = spec.partition("=")
        variant = plan_variant(name, rest)
        (FULL_PLANS if variant.params == "all" else PLANS)[name] = variant
    manifest = read_manifest(args.data)
    entries = {c["key"]: c for c in manifest["clips"]}
    keys = args.clips or sorted(split_clips(list(entries.values()), args.val_fraction)[1],
                                key=lambda k: -int(entries[k]["frames"]))[:args.count]
    starts = dict(s.split("=", 1) for s in args.start)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    warmup = args.warmup if args.warmup is not None else (3.0 if torch.device(args.device).type == "cuda" else 0.0)
    for key in keys:
        clip, why = load_clip(args.data, entries[key])
        if clip is None:
            print(f"{key}: skipped ({why})")
            continue
        record, later = segments(clip, float(entries[key].get("fps") or 25.0), args.record, args.later_frames)
        frames = record + later
        local = {f: k for k, f in enumerate(frames)}
        ref = rest_frame([clip.landmarks[f] for f in record]) if args.reference == "rest" else 0
        whole = ClipFrames([clip.image(f) for f in frames], [clip.landmarks[f] for f in frames], reference=ref)
        recording = ClipFrames(whole.crops[:len(record)], whole.points[:len(record)], reference=ref)
        identity = clip.embedding if clip.embedding is not None else np.zeros(128, np.float32)
        later_items = frame_items(whole, [(ref, local[f]) for f in later], identity)
        for plan in args.plans if warmup > 0 else ():
            t0 = time.perf_counter()
            w = personalize(recording, start_models(next(iter(starts.values())), args.preset, args.device)[0], identity,
                            budget_s=warmup, batch_size=args.batch_size, device=args.device, plan=plan,
                            amp=args.amp, **({"cache_frames": args.cache_frames} if args.cache_frames else {}))
            print(f"  warm-up ({plan}): {w.steps} steps in {time.perf_counter() - t0:.1f} s, not scored", flush=True)
        warmup = 0.0
        for (name, weights), plan, seed in ((s, pl, sd) for s in starts.items() for pl in args.plans
                                            for sd in args.seeds):
            t0 = time.perf_counter()
            base, meta = start_models(weights, args.preset, args.device)
            res = personalize(recording, base, identity, start=meta,
                              budget_s=1e9 if args.steps else args.budget, batch_size=args.batch_size,
                              lr=args.lr, device=args.device, max_steps=args.steps, seed=seed,
                              curve_every_s=None if args.steps else args.every, curve_every_steps=args.every_steps,
                              also_score={"later": later_items}, plan=plan, amp=args.amp,
                              **({"cache_frames": args.cache_frames} if args.cache_frames else {}),
                              on_estimate=None if args.steps else (lambda e: print(f"  estimate: {e.message()}", flush=True)))
            est = res.estimate
            label = (name if args.plans == ["auto"] else f"{name}/{res.plan}") + (
                f"#{seed}" if len(args.seeds) > 1 else "") + ("@rest" if args.reference == "rest" else "")
            results.setdefault(key, {})[label] = {
                "weights": weights or f"untrained {args.preset}", "plan": res.plan, "record_frames": len(record),
                "later_frames": len(later), "steps": res.steps, "estimated_steps": None if args.steps else est.steps,
                "probe_step_s": est.timing.step_s,
                "threads": est.timing.threads, "cpu_share": est.timing.cpu_share, "load": os.getloadavg(),
                "adapted": len(res.adapted or []), "seed": seed, "reference": args.reference, "reference_frame": ref,
                "curve": res.curve}
            c0, c1 = res.curve[0], res.curve[-1]
            print(f"{key} {label}/{res.plan}: {res.steps} steps (estimated {None if args.steps else est.steps}) in "
                  f"{res.seconds:.1f} s, {c1['cpu_seconds']:.1f} CPU s "
                  f"({time.perf_counter() - t0:.0f} s wall); interleaved {c0['psnr']:.2f} -> {c1['psnr']:.2f} dB, "
                  f"later {c0['later_psnr']:.2f} -> {c1['later_psnr']:.2f} dB", flush=True)
            args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
