"""Who is in which clip: a people file for ``avatar-app prepare --people``.

Training and validation are split by person, so a dataset whose videos lie side by
side in one folder (not one folder per person) needs to be told who each clip shows.
A people file is a tab-separated table with a header row holding a ``file`` column
(the video's name, or its path below the source folder) and either a ``person``
column or a ``notes`` column that contains ``person=TAG`` (the corpus MANIFEST.tsv
format).  Rows whose person is empty are left to the folder rule.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from ..errors import InputFileError

_TAG = re.compile(r"(?:^|[\s;,])person=([^\s;,]+)")


def read_people(path: str | Path) -> dict[str, str]:
    """``{file name or relative path: person}`` from a people file (see the module docstring)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputFileError(f"Could not read the people file '{path}' ({exc}).") from exc
    columns = set(rows[0]) if rows else set()
    if "file" not in columns or not columns & {"person", "notes"}:
        raise InputFileError(f"The people file '{path}' needs a header row with a 'file' column and a 'person' "
                             "column (or 'notes' holding person=TAG), separated by tabs.")
    people: dict[str, str] = {}
    for row in rows:
        person = (row.get("person") or "").strip()
        if not person:
            match = _TAG.search(row.get("notes") or "")
            person = match.group(1) if match else ""
        name = (row.get("file") or "").strip()
        if name and person:
            people[name] = person
    if not people:
        raise InputFileError(f"The people file '{path}' names nobody: no row has both a file and a person.")
    return people


def person_of(source: str, people: dict[str, str]) -> str | None:
    """The person of a clip whose path below the source folder is ``source`` ('/'-separated), if listed
    (by that path, or by its file name)."""
    return people.get(source) or people.get(source.rsplit("/", 1)[-1])
