"""The tracker at a shot cut between two real people whose faces sit alike in the frame.

Face-centred clips cut into one another (docs/MOTION_UNSEEN.md §8): the face stays near where it was, so
only the tracker's raw landmarks show the cut in one frame; its One-Euro smoothing used to spread
it over 3-4 frames, each step under the guard's per-frame jump thresholds, and the guard followed
the cut as motion.  Reads the real clips in place; skips without them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from avatar_app.capture import stress
from avatar_app.face.jumps import is_jump, jump_terms
from avatar_app.face.tracker import FaceTracker
from avatar_app.train.stress_unseen import unseen_clips

CLIPS = Path(os.environ.get("AVATAR_APP_REAL_CLIPS", Path(__file__).resolve().parents[2] / "shared" / "data" / "real_clips"))
SHOT = 10


def test_a_cut_between_people_at_the_same_place_shows_as_a_jump():
    """At every cut of the unseen shot cut's first 60 frames (P0 -> P1 -> P2 -> P0 ..., face-centred
    clips) the tracker restarts its smoothing (its output is the raw face) and says ``cut``, so the
    guard sees a jump in that frame; within a shot, never."""
    if not (CLIPS / "MANIFEST.tsv").is_file():
        pytest.skip(f"real clips not found at {CLIPS} (they are never copied into the repository)")
    clips, fps = stress.read_clips(unseen_clips(CLIPS, 60)[:3], 3, 2 * SHOT, 384, CLIPS)
    driver = stress.shot_cut(clips, fps, shot=SHOT)  # the unseen shot cut's first 60 frames
    cuts = set(range(SHOT, len(driver.frames), SHOT))
    smooth, raw = FaceTracker(), FaceTracker(smoothing=None)
    shown, seen, flagged = [], [], set()
    for i, f in enumerate(driver.frames):
        t, r = smooth.track(f), raw.track(f)
        assert t.found and r.found
        shown.append(t.landmarks)
        seen.append(r.landmarks)
        if getattr(t, "cut", False):
            flagged.add(i)
    # cuts that keep the face in place and size: the tracker's place-and-size restart misses them
    alike = [i for i in sorted(cuts) if (lambda s, z, _: s < 1.0 and z < 0.3)(*jump_terms(seen[i - 1], seen[i]))]
    assert alike, "no cut of this driver keeps the face in place: nothing tested"
    restarted = {i for i in cuts if np.abs(shown[i].points - seen[i].points).max() < 1e-3}
    assert restarted == cuts, f"cuts smoothed over: {sorted(cuts - restarted)} (alike: {alike})"
    guard_sees = flagged | {i for i in range(1, len(shown)) if is_jump(shown[i - 1], shown[i], 1.0 / fps)}
    assert guard_sees == cuts, f"cuts missed: {sorted(cuts - guard_sees)}, jumps in a shot: {sorted(guard_sees - cuts)}"
