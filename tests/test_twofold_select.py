"""tools/twofold_select.py: each half chooses on its own people only (the held-out half's figures are unbiased)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_tool

PEOPLE = ["a", "b", "c", "d"]  # halves by alternate names: A = a, c; B = b, d


def _tool():
    return load_tool("twofold_select")


def _row(psnr=None, identity=None):
    return {"psnr": psnr, "ssim": 0.7, "landmark_error": 2.0, "identity_distance": identity}


def _write(folder: Path, name: str, psnr: float, cross_on: dict[str, float]) -> None:
    """Candidate ``name``: self PSNR ``psnr`` for everyone; cross identity of each *portrait* person from
    ``cross_on`` (the geometric avatar's 0.2); drivers as eval_cross.partner pairs them: the next person,
    who is of the other half."""
    self_clips = [{"identity": p, "animators": {"neural": _row(psnr, 0.2), "geometric": _row(20.0, 0.2)}}
                  for p in PEOPLE]
    cross_clips = [{"identity": p, "source_identity": PEOPLE[(k + 1) % len(PEOPLE)],
                    "animators": {"neural": _row(identity=cross_on[PEOPLE[(k + 1) % len(PEOPLE)]]),
                                  "geometric": _row(identity=0.2)}}
                   for k, p in enumerate(PEOPLE)]
    for kind, clips in (("self", self_clips), ("cross", cross_clips)):
        (folder / f"{name}_{kind}").mkdir()
        (folder / f"{name}_{kind}" / "metrics.json").write_text(json.dumps({"clips": clips}))


def test_a_cross_identity_row_counts_for_the_portraits_person(tmp_path):
    _write(tmp_path, "x", 21.0, {"a": 0.5, "b": 0.2, "c": 0.2, "d": 0.2})
    cross = _tool().per_person(tmp_path / "x_cross" / "metrics.json")
    assert cross["neural"]["a"]["identity_distance"] == 0.5  # a's portrait (driven by d) lost its identity
    assert cross["neural"]["d"]["identity_distance"] == 0.2


def test_each_half_chooses_on_its_own_peoples_portraits(tmp_path, capsys):
    # "sharp" is sharper but loses the identity of half A's portraits (a, c); "safe" keeps every identity.
    _write(tmp_path, "safe", 21.0, dict.fromkeys(PEOPLE, 0.2))
    _write(tmp_path, "sharp", 22.0, {"a": 0.5, "b": 0.2, "c": 0.5, "d": 0.2})
    _tool().main(["--reports", str(tmp_path), "--candidates", "safe", "sharp"])
    out = capsys.readouterr().out
    # half A sees its own portraits' identity lost and keeps "safe"; half B's portraits keep it, so it takes "sharp"
    # (counted by driver, half A would see b's and d's portraits and take "sharp", B would keep "safe")
    assert "chosen on half A: safe" in out and "chosen on half B: sharp" in out, out


def test_a_person_no_cross_row_animated_is_left_out_of_that_mean():
    """A person whose portrait no cross-identity row animated (evaluate skipped the row, e.g. a damaged frame
    file) has no cross figure; the half's mean is over the others, not a KeyError."""
    table = {"a": {"identity_distance": 0.2}, "c": {"identity_distance": 0.4}}
    assert abs(_tool().mean_over(table, ["a", "b", "c"], "identity_distance") - 0.3) < 1e-12
