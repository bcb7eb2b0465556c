"""Which clips of a prepared dataset train and which validate: :data:`SPLIT_RULE`, by person.

One rule for training (:class:`~.data.PreparedDataset`, :class:`~.resident.ResidentPairs`),
``avatar-app evaluate`` and the tools, stable across runs and machines (crc32 of the
identity's name, not Python's salted ``hash``).  No torch here: the CLI imports it at start-up.
"""

from __future__ import annotations

import zlib

_BUCKETS = 1000

SPLIT_RULE = (
    "With two or more identities: an identity is validation when crc32(UTF-8 name) modulo 1000 is below "
    "round(val_fraction x 1000); if that picks none, the last identity in name order is validation, and if it "
    "picks all, the first is training. With one identity the same rule applies to clip keys instead (the person "
    "is then in both splits). val_fraction 0 puts everything in training. Split 'all' uses every clip."
)


def _in_val(name: str, val_fraction: float) -> bool:
    return zlib.crc32(name.encode("utf-8")) % _BUCKETS < round(val_fraction * _BUCKETS)


def _split_names(names: list[str], val_fraction: float) -> set[str]:
    """The validation subset of ``names`` (sorted unique), with at least one name on each side."""
    names = sorted(set(names))
    if val_fraction <= 0 or not names:
        return set()
    val = {n for n in names if _in_val(n, val_fraction)}
    if len(names) >= 2:
        if not val:
            val = {names[-1]}
        elif len(val) == len(names):
            val.discard(names[0])
    return val


def split_clips(entries: list[dict], val_fraction: float = 0.1) -> tuple[list[str], list[str]]:
    """``(train keys, val keys)`` of manifest clip entries by :data:`SPLIT_RULE`, each sorted."""
    keys = sorted(str(e["key"]) for e in entries)
    ident = {str(e["key"]): str(e.get("identity") or e["key"]) for e in entries}
    identities = sorted(set(ident.values()))
    if len(identities) >= 2:
        val_ids = _split_names(identities, val_fraction)
        val = [k for k in keys if ident[k] in val_ids]
    else:
        val_keys = _split_names(keys, val_fraction)
        val = [k for k in keys if k in val_keys]
    chosen = set(val)
    return [k for k in keys if k not in chosen], val
