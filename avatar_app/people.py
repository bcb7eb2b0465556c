"""Who is in which clip: the ``person=`` tag of a manifest row, and people files for
``avatar-app prepare --people``.

Training and validation are split by person, so a dataset whose videos lie side by
side in one folder (not one folder per person) needs to be told who each clip shows.
A people file is a tab-separated table with a header row holding a ``file`` column
(the video's name, or its path below the source folder) and either a ``person``
column or a ``notes`` column that contains ``person=TAG`` (the corpus MANIFEST.tsv
format).  Rows whose person is empty are left to the folder rule.

One parser of a row's person (:func:`row_person`) serves both readers of such tables:
:func:`read_people` (preparing) and :mod:`avatar_app.capture.stress` (the stress drivers'
clips of different people).  This module sits below both packages (it imports only
:mod:`avatar_app.errors`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from pathlib import Path

from .errors import InputFileError

_TAG = re.compile(r"(?:^|[\s;,])person=([^\s;,]+)")


def person_tag(notes: str | None) -> str | None:
    """The ``TAG`` of the first ``person=TAG`` in a notes cell (it ends at a space, ``;`` or ``,``), if any."""
    match = _TAG.search(notes or "")
    return match.group(1) if match else None


def row_person(row: Mapping[str, str | None]) -> str | None:
    """The person a table row names: its ``person`` cell, else the ``person=TAG`` of its ``notes`` cell."""
    return (row.get("person") or "").strip() or person_tag(row.get("notes"))


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
        person = row_person(row)
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
