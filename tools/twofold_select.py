"""Choose one setting among candidates by two-fold selection over the validation people.

Each candidate has two `avatar-app evaluate` reports over the same validation clips: self-reenactment
(``NAME_self/metrics.json``) and cross-identity (``NAME_cross/metrics.json``, ``--cross``).  The
people are split into two halves (alternate people in name order).  On each half, the rule picks
the candidate with the highest self-reenactment PSNR whose cross-identity distance is within
``--margin`` of the geometric avatar's on that half; the pick is then scored on the *other* half,
which did not choose it.  Those held-out scores are the unbiased figures.  How the mask-logit
offset of the shipped weights was chosen (docs/REAL_FACES.md):

    python tools/twofold_select.py --reports EVAL_DIR --candidates o0 o1.0 o1.5 o2.0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

METRICS = ("psnr", "ssim", "landmark_error", "identity_distance")


def per_person(report: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{animator: {person: {metric: mean over that person's clips}}}`` of one report.

    A cross-identity row counts for the person whose portrait was animated (``source_identity``: the identity
    its distance is measured against), not for the driver (``identity``), who is mostly of the other half
    (``eval_cross.partner``: the next clip of another person), so a half chooses on its own people's faces."""
    clips = json.loads(report.read_text())["clips"]
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for clip in clips:
        for animator, m in clip["animators"].items():
            person = out.setdefault(animator, {}).setdefault(clip.get("source_identity") or clip["identity"], {})
            for k in METRICS:
                if m.get(k) is not None:
                    person.setdefault(k, []).append(float(m[k]))
    return {a: {p: {k: float(np.mean(v)) for k, v in ms.items()} for p, ms in people.items()}
            for a, people in out.items()}


def mean_over(table: dict[str, dict[str, float]], people: list[str], metric: str) -> float:
    return float(np.mean([table[p][metric] for p in people if metric in table.get(p, {})]))


def summary(self_rep, cross_rep, people: list[str]) -> dict[str, float]:
    """Neural and geometric figures over ``people``: PSNR, SSIM, landmark error, identity, cross identity."""
    out = {}
    for animator, tag in (("neural", ""), ("geometric", "geo_")):
        for k in METRICS:
            out[tag + k] = mean_over(self_rep[animator], people, k)
        out[tag + "cross_identity"] = mean_over(cross_rep[animator], people, "identity_distance")
    return out


def choose(figures: dict[str, dict[str, float]], margin: float) -> str | None:
    """The candidate with the highest PSNR whose cross identity is within ``margin`` of the geometric's."""
    ok = [c for c, f in figures.items() if f["cross_identity"] <= f["geo_cross_identity"] + margin]
    return max(ok, key=lambda c: figures[c]["psnr"]) if ok else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=Path, required=True, help="folder with NAME_self/ and NAME_cross/ reports")
    ap.add_argument("--candidates", nargs="+", required=True, help="NAMEs of the candidates")
    ap.add_argument("--margin", type=float, default=0.01,
                    help="cross-identity distance allowed above the geometric avatar's (default 0.01)")
    args = ap.parse_args(argv)

    reports = {c: (per_person(args.reports / f"{c}_self" / "metrics.json"),
                   per_person(args.reports / f"{c}_cross" / "metrics.json")) for c in args.candidates}
    people = sorted(next(iter(reports.values()))[0]["neural"])
    halves = {"A": people[0::2], "B": people[1::2]}
    everyone = {c: summary(*reports[c], people) for c in args.candidates}
    print(f"{len(people)} people; half A: {', '.join(halves['A'])}; half B: {', '.join(halves['B'])}")
    print(f"{'candidate':<12}{'people':<8}{'PSNR':>8}{'geo':>8}{'gain':>7}{'SSIM':>8}{'AKD':>6}{'id':>7}"
          f"{'cross id':>10}{'geo':>7}{'diff':>8}")
    for c in args.candidates:
        for name, group in (("all", people), *halves.items()):
            f = summary(*reports[c], group)
            print(f"{c:<12}{name:<8}{f['psnr']:8.2f}{f['geo_psnr']:8.2f}{f['psnr'] - f['geo_psnr']:+7.2f}"
                  f"{f['ssim']:8.4f}{f['landmark_error']:6.2f}{f['identity_distance']:7.3f}"
                  f"{f['cross_identity']:10.3f}{f['geo_cross_identity']:7.3f}"
                  f"{f['cross_identity'] - f['geo_cross_identity']:+8.3f}")
    for chooser, scorer in (("A", "B"), ("B", "A")):
        figures = {c: summary(*reports[c], halves[chooser]) for c in args.candidates}
        pick = choose(figures, args.margin)
        if pick is None:
            print(f"chosen on half {chooser}: no candidate within {args.margin} of the geometric's cross identity")
            continue
        f = summary(*reports[pick], halves[scorer])
        print(f"chosen on half {chooser}: {pick} -> on half {scorer}: PSNR {f['psnr'] - f['geo_psnr']:+.2f} dB, "
              f"cross identity {f['cross_identity'] - f['geo_cross_identity']:+.3f} against the geometric avatar")
    pick = choose(everyone, args.margin)
    print(f"the rule on all {len(people)} people picks: {pick}")


if __name__ == "__main__":
    main()
