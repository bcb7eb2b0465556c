"""Run the stress drivers through the offline path and print the output checks as a Markdown table.

    PYTHONPATH=. python tools/stress_report.py [--clips ../shared/data/real_clips] [--size 256]
        [--frames 90] [--portraits a.jpg b.jpg ...] [--no-identity]

The figures in docs/MOTION.md come from this script.
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
from avatar_app.runtime.face_loss import DriverGuard  # noqa: E402
from avatar_app.runtime.render import drive_frames  # noqa: E402
from avatar_app.face.retarget import Retargeter  # noqa: E402
from avatar_app.train import stress_checks as sc  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", default=str(ROOT.parent / "shared" / "data" / "real_clips"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--portraits", nargs="*", default=[str(p) for p in sorted((ROOT / "assets" / "portraits").glob("*.jpg"))])
    ap.add_argument("--no-identity", action="store_true")
    args = ap.parse_args()

    still = FaceTracker()
    drivers = [stress.profile_turns(), stress.synthetic_cut()]
    if Path(args.clips, "MANIFEST.tsv").is_file():
        drivers = stress.real_stress_drivers(args.clips, args.frames) + drivers
    encoder = None
    if not args.no_identity:
        from avatar_app.models.identity import IdentityEncoder

        encoder = IdentityEncoder().load()
    print("| driver | frames | face found | two faces | max jump (face sizes) | natural + noise (face sizes) | identity p95 |")
    print("|---|---|---|---|---|---|---|")
    for portrait in args.portraits:
        source = prepare_source(read_image(portrait), args.size, tracker=still)
        emb = encoder.embed(source.crop, source.landmarks) if encoder else None
        print(f"| **{Path(portrait).stem} @ {args.size}** | | | | | | |")
        for d in drivers:
            t0 = time.perf_counter()
            with FaceTracker() as tracker:
                guard = DriverGuard(Retargeter(source.landmarks))
                images = [im for im, _ in drive_frames(source, d.frames, tracker, GeometricAnimator(source), guard)]
            natural = sc.driver_natural_jump(d, still, source)
            res = sc.check_output(d.name, images, natural, still, encoder, emb)
            print(res.row(), f"<!-- {time.perf_counter() - t0:.1f} s -->", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
