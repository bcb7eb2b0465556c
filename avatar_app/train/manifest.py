"""A prepared dataset's ``manifest.json`` (and ``report.md``): written by every prepare run, read
(checked) by everything that uses the dataset.

* one run over the output folder: :func:`open_run` checks what is already there (and whether
  identity embeddings can be written), :func:`close_run` settles the skip list and writes
  ``manifest.json`` and ``report.md`` from every complete clip (:mod:`.prepare` and
  :mod:`.synthetic` both run through here);
* :func:`read_manifest`: the checked manifest of a prepared folder (training, evaluation, tools).

The clip folders themselves are :mod:`.clipio`'s.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DependencyError, InputFileError
from .clipio import (BASE_SIZE, DLIB_NOTE, ENTRY_KEYS, FORMAT, TORCH_IDENTITY_NOTE, VERSION, is_complete, read_json,
                     write_json_atomic, write_text_atomic)


# -- one run over the output folder ---------------------------------------------------------------
@dataclass
class PrepareReport:
    """What a prepare run did.

    Attributes:
        out: the prepared folder.
        clips_done: keys of the clips prepared in this run.
        clips_skipped: ``(source, reason)`` of every clip that could not be prepared
            (this run's, plus earlier ones for sources still failing).
        clips_already_done: keys of complete clips found from an earlier run (not redone).
        frames: frames prepared in this run.
        seconds: wall time of this run's clip work.
        notes: remarks for the whole run (e.g. dlib missing).
    """

    out: Path
    clips_done: list[str] = field(default_factory=list)
    clips_skipped: list[tuple[str, str]] = field(default_factory=list)
    clips_already_done: list[str] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def manifest_path(self) -> Path:
        return self.out / "manifest.json"

    @property
    def report_path(self) -> Path:
        return self.out / "report.md"

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def note(self, text: str | None) -> None:
        """Add a remark for the whole run, once."""
        if text and text not in self.notes:
            self.notes.append(text)

    def summary(self) -> str:
        """One line for the command line."""
        line = (f"prepared {len(self.clips_done)} clip(s) ({self.frames} frames, {self.frames_per_second:.1f} frames/s), "
                f"{len(self.clips_already_done)} already done, {len(self.clips_skipped)} skipped")
        return f"{line}; report: {self.report_path}"


def _check_out(out: Path, synthetic: bool) -> list[tuple[str, str]]:
    """Make sure ``out`` can hold this dataset; returns the earlier run's skip list."""
    if out.exists() and not out.is_dir():
        raise InputFileError(f"Output '{out}' is a file; give a folder for the prepared dataset.")
    manifest = out / "manifest.json"
    if not manifest.exists():
        return []
    data = read_json(manifest)
    if data is None or data.get("format") != FORMAT:
        raise InputFileError(f"'{out}' already holds a manifest.json that is not a prepared dataset; "
                             "choose an empty or new output folder.")
    if int(data.get("version", 0)) > VERSION:
        raise InputFileError(f"'{out}' was prepared by a newer avatar-app (format version {data.get('version')}); "
                             "update avatar-app or choose a new output folder.")
    if bool(data.get("synthetic", False)) != synthetic:
        kind = "synthetic" if data.get("synthetic") else "real-video"
        raise InputFileError(f"'{out}' already holds a {kind} dataset; choose another output folder so the two "
                             "kinds are not mixed.")
    return [(s.get("source", "?"), s.get("reason", "?")) for s in data.get("skipped", []) if isinstance(s, dict)]


def open_run(out: Path, synthetic: bool) -> tuple[PrepareReport, list[tuple[str, str]], bool]:
    """Check ``out`` (a new folder, or an earlier run's of the same kind) and create ``out/clips``.

    Returns the run's report (noting when dlib is missing), the earlier run's skip list,
    and whether identity embeddings can be written.
    """
    earlier_skips = _check_out(out, synthetic)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    report = PrepareReport(out=out)
    from ..models.identity import model_files, recognition_model_file

    try:
        model_files()
        want_identity = True
    except DependencyError:
        try:
            recognition_model_file()
            want_identity = True
            report.note(TORCH_IDENTITY_NOTE)
        except DependencyError:
            want_identity = False
            report.note(DLIB_NOTE)
    return report, earlier_skips, want_identity


def close_run(report: PrepareReport, source: str, sizes: tuple[int, ...], synthetic: bool, skipped: dict[str, str],
              earlier_skips: list[tuple[str, str]], source_of: dict[str, str], started: float,
              workers: int | None = None) -> None:
    """End a run (also an interrupted one): settle the skip list, write manifest.json and report.md.

    ``source_of`` maps every clip key of this run's sources to its source; an earlier
    run's skip of a source that is still there and was neither retried nor completed
    stays listed.
    """
    report.seconds = time.perf_counter() - started
    settled = set(skipped) | {source_of[k] for k in report.clips_done + report.clips_already_done}
    alive = set(source_of.values())
    keep = [(s, r) for s, r in earlier_skips if s in alive and s not in settled]
    report.clips_skipped = sorted(skipped.items()) + keep
    _write_manifest(report, source, sizes, synthetic, workers)


def _write_manifest(report: PrepareReport, source: str, sizes: tuple[int, ...], synthetic: bool,
                    workers: int | None) -> None:
    """(Re)write manifest.json and report.md from all complete clips and the skip list."""
    out = report.out
    clips_dir = out / "clips"
    folders = sorted(p for p in clips_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if clips_dir.is_dir() else []
    metas = [m for m in (read_json(d / "meta.json") for d in folders) if is_complete(m)]
    common = set(sizes)
    for m in metas:
        common &= set(m.get("sizes", [BASE_SIZE]))
    clips = [{k: m[k] for k in ENTRY_KEYS} for m in metas]
    complete_sources = {c["source"] for c in clips}
    skip_list = [{"source": s, "reason": r} for s, r in report.clips_skipped if s not in complete_sources]
    manifest = {
        "format": FORMAT, "version": VERSION, "sizes": sorted(common), "source": source,
        "synthetic": bool(synthetic), "clips": clips, "skipped": skip_list,
    }
    write_json_atomic(out / "manifest.json", manifest)

    frames = sum(c["frames"] for c in clips)
    valid = sum(c["valid"] for c in clips)
    identities = sorted({c["identity"] for c in clips})
    lines = [
        "# Prepared dataset" + (" (synthetic)" if synthetic else ""),
        "",
        f"* Source: `{source}`",
        f"* Sizes: {', '.join(map(str, sorted(common)))}",
        f"* Complete clips: {len(clips)} of {len(identities)} identities, {frames} frames ({valid} with a face)",
        f"* This run: {len(report.clips_done)} clip(s) prepared ({report.frames} frames in {report.seconds:.1f} s, "
        f"{report.frames_per_second:.1f} frames/s" + (f", {workers} worker(s)" if workers else "") + "), "
        f"{len(report.clips_already_done)} already done, {len(skip_list)} skipped",
    ]
    if synthetic:
        lines += ["", ("Synthetic clips: each is one still portrait animated by the geometric (analytic-flow) "
                       "animator, so they teach geometry only, not how real faces change appearance.")]
    if report.notes:
        lines += ["", "## Notes", ""] + [f"* {n}" for n in report.notes]
    lines += ["", "## Skipped", ""]
    if skip_list:
        lines += ["| source | reason |", "|---|---|"]
        lines += [f"| `{s['source']}` | {s['reason'].replace('|', '/')} |" for s in skip_list]
    else:
        lines.append("Nothing was skipped.")
    lines += ["", "## Clips", ""]
    if clips:
        lines += ["| clip | identity | frames | valid | fps | source |", "|---|---|---|---|---|---|"]
        lines += [f"| {c['key']} | {c['identity']} | {c['frames']} | {c['valid']} | {c['fps']:g} | `{c['source']}` |"
                  for c in clips]
    else:
        lines.append("No clip is complete.")
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")


# -- reading ----------------------------------------------------------------------------------------
def read_manifest(root: str | Path) -> dict:
    """The checked ``manifest.json`` of a prepared dataset; :class:`InputFileError` if unusable."""
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(f"Prepared dataset '{root}' does not exist or is not a folder; run `avatar-app prepare` "
                             "first or check the path.")
    path = root / "manifest.json"
    if not path.is_file():
        raise InputFileError(f"'{root}' has no manifest.json, so it is not a prepared dataset (or preparing did not "
                             f"finish); run `avatar-app prepare SRC {root}` first.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputFileError(f"Could not read '{path}' ({exc}); prepare the dataset again.") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputFileError(f"'{path}' is not an avatar-app dataset manifest; prepare the dataset with "
                             "`avatar-app prepare`.")
    version = manifest.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise InputFileError(f"'{path}' has dataset format version {version!r}, but this avatar-app reads version "
                             f"{VERSION}; update avatar-app or prepare the dataset again.")
    clips = manifest.get("clips")
    if not isinstance(clips, list) or not all(isinstance(c, dict) and {"key", "frames"} <= set(c) for c in clips):
        raise InputFileError(f"'{path}' has a damaged clip list; prepare the dataset again.")
    return manifest
