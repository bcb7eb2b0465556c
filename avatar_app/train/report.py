"""Writing what ``avatar-app evaluate`` measured: ``metrics.json``, ``report.md`` and ``contact_sheet.jpg``.

:mod:`.evaluate` computes the metrics; everything here only formats them
(:func:`format_table`, :func:`contact_sheet`) and writes them (:func:`write_evaluation`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import OutputError
from .clipio import BASE_SIZE as CROP  # the evaluated crops: the prepared 256 ones

SHEET_COLUMNS = 6  # frames per row of the contact sheet (evenly spaced)

_COLUMNS = (  # (key, header) of the report table
    ("psnr", "PSNR (dB) ↑"),
    ("ssim", "SSIM ↑"),
    ("l1", "L1 (0–1) ↓"),
    ("landmark_error", "landmark error (% IOD) ↓"),
    ("mouth_r", "mouth follow (r) ↑"),
    ("gaze_r", "gaze follow (r) ↑"),
    ("gaze_amp", "gaze amplitude (× driver)"),
    ("open_r", "eye openness follow (r) ↑"),
    ("open_amp", "openness amplitude (× driver)"),
    ("gaze_hold", "gaze off neutral (eye widths)"),
    ("gaze_hold_p95", "gaze off neutral, p95"),
    ("faces_missed", "no face re-detected (frames)"),
    ("identity_distance", "identity distance (dlib) ↓"),
    ("jitter", "jitter excess (grey levels) ↓"),
    ("ms_per_frame", "ms / frame (median)"),
)
_DIGITS = {"ssim": 4, "l1": 4, "mouth_r": 3, "gaze_r": 3, "open_r": 3, "gaze_hold": 3, "gaze_hold_p95": 3,
           "identity_distance": 3, "ms_per_frame": 0}  # others: 2


def finite_or_none(v) -> float | None:
    """``float(v)``, or ``None`` for ``None``, NaN and ±inf (JSON has no such numbers)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def jsonable(obj):
    """``obj`` with numpy scalars as Python numbers, tuples as lists and non-finite floats as ``None``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return finite_or_none(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _fmt(key: str, value, entry: dict) -> str:
    if key == "faces_missed":
        return f"{value}/{entry.get('frames', 0)}"
    if value is None:
        return "–"
    return f"{value:.{_DIGITS.get(key, 2)}f}"


def format_table(aggregate: dict, labels: dict[str, str] | None = None) -> str:
    """The aggregate metrics as a markdown table: one row per animator, columns with units."""
    labels = labels or {}
    lines = ["| animator | " + " | ".join(h for _, h in _COLUMNS) + " |",
             "|---|" + "---:|" * len(_COLUMNS)]
    for name, entry in aggregate.items():
        cells = [_fmt(k, entry.get(k), entry) for k, _ in _COLUMNS]
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _report_text(metrics: dict) -> str:
    s = metrics["settings"]
    gt = metrics["ground_truth"]
    lines = [
        "# Animator evaluation",
        "",
        (f"Dataset `{s['data']}`, split `{s['split']}`: cross-identity reenactment on {len(metrics['clips'])} "
         f"clip(s), up to {s['frames']} driven frames each (each clip's motion, relative to its first frame, "
         f"retargeted onto the first frame of another person's clip; no ground truth). Neural: {s['neural']}."
         if s.get("cross") else
         f"Dataset `{s['data']}`, split `{s['split']}`: self-reenactment on {len(metrics['clips'])} clip(s), "
         f"up to {s['frames']} driven frames each (source = the clip's first valid frame, ground truth = the "
         f"later valid frames' {s.get('size', CROP)} crops, driven by their prepared landmarks). Neural: {s['neural']}."),
        "",
        format_table(metrics["aggregate"], metrics["labels"]),
        "",
        "Ground truth for reference: its own jitter "
        + (f"{gt['jitter']:.2f} grey levels" if gt["jitter"] is not None else "–")
        + "; identity distance source ↔ ground truth frames "
        + (f"{gt['identity_distance']:.3f}" if gt["identity_distance"] is not None else "–")
        + " (what the real frames score).",
        "",
        "Metrics (means over clips of per-clip means):",
        "",
        ("* PSNR: 8-bit peak, all channels, capped at 100 dB. SSIM: grey levels, 11×11 Gaussian window "
         "(σ 1.5). L1: mean absolute difference, 1 = 255 levels."),
        ("* Landmark error: mean distance of the 478 landmarks re-detected on the output (mediapipe, still "
         "image) from the driving landmarks, in % of the inter-ocular distance; frames with no face "
         "re-detected are counted in the next column and left out."),
        (f"* Identity distance: dlib 128-d embedding of the source crop vs up to {s['identity_samples']} evenly "
         "spaced outputs (Euclidean; below 0.6 = same person by dlib's threshold)."),
        ("* Jitter excess: mean |f[t+1] − 2 f[t] + f[t−1]| of the output minus that of the ground truth, in "
         "grey levels (0 = as smooth as the real video, negative = smoother, e.g. the static baseline)."),
        ("* Mouth follow: Pearson r between the target's and the re-detected output's mouth openings (each over "
         "its inter-ocular distance) over the driven frames; – where either hardly moves."),
        ("* Eyes (docs/EYES.md): mediapipe re-detects the driver's frames and the outputs; gaze = iris centre "
         "along the eye-corner line (0..1), openness = lid gap over eye width, both eyes averaged. r: Pearson "
         "correlation with the driver's; amplitude: least-squares slope on the driver's (1 = as much motion); "
         "measured on clips where the driver's gaze (openness) varies by at least 0.02 (s.d.) — "
         f"{_eye_clips(metrics)}. Gaze off neutral: mean |output gaze − the source's own gaze|"
         + (" (eye contact on: targets' gaze held at the source's)." if s.get("eye_contact") else ".")),
        "* static: the unmoved source crop for every frame — the baseline to beat.",
        "",
        "## Split rule",
        "",
        metrics["split_rule"],
        "",
        "## Clips",
        "",
    ]
    for c in metrics["clips"]:
        f = c["frames"]
        lines.append(f"* `{c['key']}` ({c['identity']}): source frame {c['source_frame']}, "
                     f"{len(f)} driven frames ({f[0]}–{f[-1]})")
    if metrics["skipped"]:
        lines += ["", "## Skipped clips", ""]
        lines += [f"* `{k['key']}`: {k['reason']}" for k in metrics["skipped"]]
    if metrics["notes"]:
        lines += ["", "## Notes", ""]
        lines += [f"* {n}" for n in metrics["notes"]]
    return "\n".join(lines) + "\n"


def _eye_clips(metrics: dict) -> str:
    first = next(iter(metrics["aggregate"].values()), {})
    return (f"{first.get('gaze_clips', 0)} of {first.get('clips', 0)} clip(s) for gaze, "
            f"{first.get('open_clips', 0)} for openness")


def _label(tile: np.ndarray, text: str, y: int) -> None:
    import cv2

    for color, thick in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(tile, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, thick, cv2.LINE_AA)


def contact_sheet(shown: list[tuple[dict, dict]], labels: dict[str, str]) -> np.ndarray:
    """Rows = ground truth and each animator, per clip; columns = up to :data:`SHEET_COLUMNS`
    evenly spaced driven frames; every tile is the 256 crop, labelled. ``(rows·256, cols·256, 3)``.

    ``shown``: ``(clip result, {row name: images of the driven frames})`` per clip.
    """
    import cv2

    ncols = max(min(SHEET_COLUMNS, len(res["frames"])) for res, _ in shown)
    rows = []
    for res, images in shown:
        n = len(res["frames"])
        cols = sorted({int(round(x)) for x in np.linspace(0, n - 1, min(SHEET_COLUMNS, n))})
        for r, (name, seq) in enumerate(images.items()):
            row = np.zeros((CROP, ncols * CROP, 3), np.uint8)
            for c, i in enumerate(cols):
                tile = seq[i] if seq[i].shape[0] == CROP else cv2.resize(seq[i], (CROP, CROP), interpolation=cv2.INTER_AREA)
                tile = tile.copy()
                _label(tile, labels.get(name, name), 18)
                _label(tile, f"frame {res['frames'][i]}", CROP - 10)
                if r == 0 and c == 0:
                    _label(tile, res["key"][:30], 38)
                row[:, c * CROP:(c + 1) * CROP] = tile
            rows.append(row)
    return np.concatenate(rows, axis=0)


def write_evaluation(out: Path, metrics: dict, shown: list[tuple[dict, dict]]) -> None:
    """Write ``metrics.json``, ``report.md`` and ``contact_sheet.jpg`` (of ``shown``) into ``out``.

    ``metrics`` is the :func:`jsonable` evaluation (``settings``, ``split_rule``, ``labels``,
    ``clips``, ``aggregate``, ``ground_truth``, ``skipped``, ``notes``).

    Raises:
        OutputError: a file cannot be written.
    """
    import cv2

    out = Path(out)
    try:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (out / "report.md").write_text(_report_text(metrics), encoding="utf-8")
        sheet = contact_sheet(shown, metrics["labels"])
        if not cv2.imwrite(str(out / "contact_sheet.jpg"), sheet, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise OSError("OpenCV could not write the JPEG")
    except OSError as exc:
        raise OutputError(f"Could not write the evaluation to '{out}' ({exc}); choose another --out.") from exc


__all__ = ["SHEET_COLUMNS", "contact_sheet", "finite_or_none", "format_table", "jsonable", "write_evaluation"]
