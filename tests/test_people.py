"""Who is in which clip: people files for ``prepare --people``, and the one parser of a manifest
row's ``person=`` tag that preparing and the stress drivers share."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from avatar_app.capture import stress
from avatar_app.errors import InputFileError
from avatar_app.people import person_of, person_tag, read_people, row_person
from avatar_app.train.prepare import discover_clips

CORPUS = Path(os.environ.get("AVATAR_APP_REAL_CLIPS", Path(__file__).resolve().parents[2] / "shared" / "data" / "real_clips"))


def test_people_file(tmp_path):
    f = tmp_path / "MANIFEST.tsv"
    f.write_text("file\trepo\tnotes\n"
                 "a__b__x.mp4\trepo\tperson=kim; edge of a graphic; src frames 0-222\n"
                 "c.mp4\trepo\tno tag here\n"
                 "sub/d.mp4\trepo\tperson=obama\n", encoding="utf-8")
    people = read_people(f)
    assert people == {"a__b__x.mp4": "kim", "sub/d.mp4": "obama"}
    assert person_of("a__b__x.mp4", people) == "kim" and person_of("x/sub/d.mp4", people) is None
    assert person_of("folder/a__b__x.mp4", people) == "kim"  # by file name
    g = tmp_path / "people.tsv"
    g.write_text("file\tperson\nclip1.mp4\tann\n", encoding="utf-8")
    assert read_people(g) == {"clip1.mp4": "ann"}
    bad = tmp_path / "bad.tsv"
    bad.write_text("name,person\nx,y\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="'file' column"):
        read_people(bad)
    with pytest.raises(InputFileError, match="could not read|Could not read"):
        read_people(tmp_path / "missing.tsv")
    # clips side by side in one folder: the people file, not the folder rule, names who is who
    src = tmp_path / "videos"
    src.mkdir()
    for name in ("a__b__x.mp4", "c.mp4"):
        (src / name).write_bytes(b"")
    jobs = {j.key: j.identity for j in discover_clips(src, people=people)}
    assert jobs == {"a__b__x": "kim", "c": "c"}


def test_person_tags_where_they_end():
    assert person_tag("person=kim; edge of a graphic") == "kim"
    assert person_tag("MEAD 256 crop; person=mead_M030; src frames 0-97") == "mead_M030"
    assert person_tag("person=ann,second person=bob") == "ann"  # the first; a tag ends at , ; or a space
    assert person_tag("person=kim talking") == "kim"
    assert person_tag("xperson=kim") is None and person_tag("no tag here") is None and person_tag(None) is None
    assert row_person({"file": "a.mp4", "person": " ann ", "notes": "person=kim"}) == "ann"  # the column first
    assert row_person({"file": "a.mp4", "person": "", "notes": "person=kim"}) == "kim"
    assert row_person({"file": "a.mp4", "notes": "nobody"}) is None


def _people_table(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)


def _check_both_readers_agree(folder: Path) -> int:
    """Preparing's people file and the stress drivers' manifest rows name the same person for every
    row with a tag; a row without one is its own person for the drivers and left out of the file."""
    people = read_people(folder / "MANIFEST.tsv")
    rows = stress.manifest_rows(folder)
    for row in rows:
        assert stress.person_of_row(row) == people.get(row["file"], row["file"]), row
    return len(rows)


def test_prepare_and_the_stress_drivers_read_the_same_people(tmp_path):
    notes = ["person=kim; edge of a graphic", " person=obama ", "src frames 0-9; person=ann,cropped", "no tag",
             "person=kim talking"]
    _people_table(tmp_path / "MANIFEST.tsv", [{"file": f"c{i}.mp4", "face_fraction": "1.0", "frames_kept": "90",
                                               "notes": n} for i, n in enumerate(notes)])
    assert _check_both_readers_agree(tmp_path) == len(notes)
    assert [stress.person_of_row(r) for r in stress.manifest_rows(tmp_path)] == ["kim", "obama", "ann", "c3.mp4",
                                                                                   "kim"]


@pytest.mark.skipif(not (CORPUS / "MANIFEST.tsv").is_file(), reason=f"the real-clip corpus is not at {CORPUS}")
def test_the_corpus_manifest_is_read_alike_by_both():
    rows = _check_both_readers_agree(CORPUS)
    assert rows >= 100 and len(set(read_people(CORPUS / "MANIFEST.tsv").values())) >= 20
