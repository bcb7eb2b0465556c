"""Run the stress drivers through the offline path and print the output checks as a Markdown table.

    PYTHONPATH=. python tools/stress_report.py [--clips ../shared/data/real_clips] [--size 256]
        [--frames 90] [--portraits a.jpg b.jpg ...] [--validation-people 3] [--drivers shot_cut ...]
        [--animator geometric|neural] [--weights assets/weights/full-real.safetensors] [--device cuda] [--no-identity]
        [--live | --lockstep] [--unseen] [--identity-every 6]

``--live`` plays each driver through the live pipeline (``avatar-app live``'s threads, paced at
the driver's frame rate; a machine that cannot keep up skips frames, and each output jump is
then divided by the driver frames it spans); ``--lockstep`` through the same pipeline one frame
at a time (nothing skipped: the same avatars as offline).

``--unseen`` plays the drivers nobody here has seen instead (:mod:`avatar_app.train.stress_unseen`:
other people than the seen drivers' and the validation portraits', new constructions).

``--validation-people N`` adds the first frames of N validation people's clips (read from
``--clips``, never copied) to the portraits.  The figures in docs/MOTION.md come from this script.

Several reports at once on one machine: give each ``OMP_NUM_THREADS`` = the cores over the reports.  Three
at once with torch's default thread count each took 165 s for a profile-turns row that one alone takes in
17 s, and 12–14 s each with 5 threads on 16 cores (docs/MOTION_IDENTITY.md, §7.2).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar_app.capture import stress  # noqa: E402
from avatar_app.face.source import prepare_source, read_image  # noqa: E402
from avatar_app.face.tracker import FaceTracker  # noqa: E402
from avatar_app.runtime.animator import GeometricAnimator  # noqa: E402
from avatar_app.train import stress_checks as sc  # noqa: E402
from avatar_app.train.stress_run import live_avatars, offline_avatars  # noqa: E402
from avatar_app.train.stress_unseen import unseen_stress_drivers, unseen_synthetic_cut  # noqa: E402


def make_animator(args, source):
    if args.animator == "geometric":
        return GeometricAnimator(source)
    from avatar_app.runtime.neural_animator import NeuralAnimator

    return NeuralAnimator(source, weights=args.weights, preset=args.preset, device=args.device)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", default=str(ROOT.parent / "shared" / "data" / "real_clips"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--portraits", nargs="*", default=[str(p) for p in sorted((ROOT / "assets" / "portraits").glob("*.jpg"))])
    ap.add_argument("--validation-people", type=int, default=0, help="also animate N validation people's first frames")
    ap.add_argument("--drivers", nargs="*", help="only these drivers (default: all)")
    ap.add_argument("--animator", choices=("geometric", "neural"), default="geometric")
    ap.add_argument("--weights", help="neural weights (e.g. assets/weights/full-real.safetensors)")
    ap.add_argument("--preset", choices=("lite", "full"), default="full", help="the neural preset of --weights")
    ap.add_argument("--device", help="the neural animator's torch device (cpu, cuda; default: the CPU)")
    ap.add_argument("--no-identity", action="store_true")
    ap.add_argument("--identity-every", type=int, default=6, help="the identity on every N-th (driver) frame")
    ap.add_argument("--unseen", action="store_true", help="the unseen drivers (stress_unseen) instead of the seen ones")
    path = ap.add_mutually_exclusive_group()
    path.add_argument("--live", action="store_true", help="through the live pipeline, paced at the driver's rate")
    path.add_argument("--lockstep", action="store_true", help="through the live pipeline, one frame at a time")
    args = ap.parse_args()

    still = FaceTracker()
    real = Path(args.clips, "MANIFEST.tsv").is_file()
    if args.unseen:
        drivers = unseen_stress_drivers(args.clips, args.frames) if real else [unseen_synthetic_cut()]
    else:
        drivers = [stress.profile_turns(), stress.synthetic_cut()]
        if real:
            drivers = stress.real_stress_drivers(args.clips, args.frames) + drivers
    if args.drivers:
        drivers = [d for d in drivers if d.name in args.drivers]
    portraits = [(Path(p).stem, read_image(p)) for p in args.portraits]
    if args.validation_people and real:
        portraits += sc.validation_portraits(args.clips, args.validation_people)
    encoder = None
    if not args.no_identity:
        from avatar_app.models.identity import IdentityEncoder

        encoder = IdentityEncoder().load()
    how = "live (paced)" if args.live else "live (lockstep)" if args.lockstep else "offline"
    print(f"{args.animator} animator{' ' + Path(args.weights).name if args.weights else ''}, {args.frames} real frames, "
          f"{how}{', unseen drivers' if args.unseen else ''}")
    print(sc.ROW_HEADER)
    naturals: dict[str, float] = {}
    rows = failing = 0
    for name, image in portraits:
        source = prepare_source(image, args.size, tracker=still)
        emb = encoder.embed(source.crop, source.landmarks) if encoder else None
        animator = make_animator(args, source)
        print(f"| **{name} @ {args.size}** | | | | | | | |")
        for d in drivers:
            t0 = time.perf_counter()
            indices, note = None, ""
            if args.live or args.lockstep:
                images, indices, info = live_avatars(source, d, animator, lockstep=args.lockstep)
                note = f"{len(images)} of {info['frames']} driver frames, largest skip {_skip(indices)}; "
            else:
                images = offline_avatars(source, d, animator)
            if d.natural:  # a real driver's natural motion does not depend on the portrait
                natural = naturals.setdefault(d.name, sc.driver_natural_jump(d, still))
            else:
                natural = sc.driver_natural_jump(d, still, source)
            res = sc.check_output(d.name, images, natural, still, encoder, emb, indices=indices,
                                  identity_every=args.identity_every)
            print(res.row(), f"<!-- {note}{time.perf_counter() - t0:.1f} s -->", flush=True)
            rows, failing = rows + 1, failing + bool(res.failures())
    print(f"\n{rows} rows, {failing} failing")
    return 0


def _skip(indices: list[int]) -> int:
    """The most driver frames one live output frame stepped over."""
    return max((b - a - 1 for a, b in zip(indices, indices[1:])), default=0)


if __name__ == "__main__":
    raise SystemExit(main())
