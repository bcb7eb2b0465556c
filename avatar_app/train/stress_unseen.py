"""Stress drivers nobody here has seen: the same stress kinds, built from people that neither the
stress drivers (:func:`~avatar_app.capture.stress.real_stress_drivers`) nor the other portraits
(:func:`~.stress_checks.validation_rows`) were developed on, chosen by :data:`UNSEEN_RULE`
(fixed before any result was looked at), plus new constructions of the same kinds.

The drivers play through the same paths and checks as the seen ones
(``tools/stress_report.py --unseen``, ``tests/test_stress.py``); docs/MOTION_UNSEEN.md §8 has the rows.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..capture import stress

UNSEEN_PEOPLE = 6
UNSEEN_SEED = 13  # the number; fixed before any result was seen

UNSEEN_RULE = (
    "Seen people: those of every clip set the seen real drivers can be built from in the folder "
    "(clips_of_different_people(folder, 3, min_frames=m) for m = 1 and every clip length in the manifest, "
    "so whatever --frames a run used) and the three validation portraits of docs/MOTION_PORTRAITS.md section 5. "
    f"Unseen drivers: {UNSEEN_PEOPLE} other people, each one's first clip in manifest order with a face in "
    "every frame and at least the driver's frames, spread evenly over the manifest in its order (the seen "
    "drivers' own rule, the seen people excluded): P0..P5."
)


def seen_people(folder: str | Path) -> set[str]:
    """Everyone a seen stress driver or a section-5 portrait shows (see :data:`UNSEEN_RULE`)."""
    from .stress_checks import validation_rows

    rows = stress.manifest_rows(folder)
    lengths = {1} | {int(r["frames_kept"]) for r in rows}
    people = {stress.person_of_row(r) for r in validation_rows(folder, 3)}
    by_file = {r["file"]: stress.person_of_row(r) for r in rows}
    for m in sorted(lengths):
        people |= {by_file[p.name] for p in stress.clips_of_different_people(folder, 3, min_frames=m)}
    return people


def unseen_clips(folder: str | Path, frames: int, count: int = UNSEEN_PEOPLE) -> list[Path]:
    """P0..P(count-1) of :data:`UNSEEN_RULE` (fewer when the folder has fewer unseen people)."""
    return stress.clips_of_different_people(folder, count, min_frames=frames, exclude=seen_people(folder))


def unseen_stress_drivers(folder: str | Path, frames: int = 90, size: int = 384) -> list[stress.StressDriver]:
    """The unseen drivers, each named ``unseen_<kind>``:

    * ``unseen_shot_cut``: cuts between P0, P1, P2 (the seen construction);
    * ``unseen_cut_pair``: cuts between two people only, P3 and P4, a quarter of ``frames`` a shot;
    * ``unseen_approach_retreat``: P3 backs away first (to 0.5×), then comes close (2×);
    * ``unseen_side_to_side``: P4;
    * ``unseen_second_face``: P5, with P1 sliding in beside;
    * ``unseen_synthetic_cut``: the synthetic face cut to shots drawn from :data:`UNSEEN_SEED`
      (:func:`~avatar_app.capture.stress.random_shots`), talking on that seed's timeline.
    """
    clips, fps = stress.read_clips(unseen_clips(folder, frames), UNSEEN_PEOPLE, frames, size, folder)
    third = frames // 3
    drivers = [
        stress.shot_cut([c[:third * 2] for c in clips[:3]], fps, shot=max(10, frames // 6)),
        replace(stress.shot_cut(clips[3:5], fps, shot=max(10, frames // 4)), name="cut_pair"),
        stress.approach_retreat(clips[3], fps, period_s=frames / fps, retreat_first=True),
        stress.side_to_side(clips[4], fps),
        stress.second_face(clips[5], clips[1], fps),
    ]
    return [replace(d, name=f"unseen_{d.name}") for d in drivers] + [unseen_synthetic_cut()]


def unseen_synthetic_cut() -> stress.StressDriver:
    """The synthetic cut to :data:`UNSEEN_SEED`'s shots (needs no clips)."""
    driver = stress.synthetic_cut(shots=stress.random_shots(UNSEEN_SEED), talk_seed=UNSEEN_SEED)
    return replace(driver, name="unseen_synthetic_cut")
