"""``avatar-app profiles list | show NAME | delete NAME``: the command line over :mod:`avatar_app.profiles`."""

from __future__ import annotations

import argparse
import json
import sys

from .errors import AvatarError, UsageError
from .profiles import (INFO_FILE, NEUTRAL_FILE, _unknown, delete_profile, list_profiles, load_profile, profiles_root,
                       validate_name)



def add_profiles_parser(sub) -> argparse.ArgumentParser:
    """Add ``profiles list | show NAME | delete NAME [--yes]`` to the CLI's subparsers (run with :func:`run_profiles`)."""
    p = sub.add_parser("profiles", help="list, show or delete personalized profiles")
    actions = p.add_subparsers(dest="profiles_action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the saved profiles, with their before/after scores")
    s = actions.add_parser("show", help="one profile's details and files")
    s.add_argument("name", metavar="NAME")
    d = actions.add_parser("delete", help="delete a profile")
    d.add_argument("name", metavar="NAME")
    d.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    return p


def _number(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def metric_summary(metrics: dict) -> str:
    """``"psnr 24.10→27.30"`` for each before/after pair in ``metrics`` (empty if none)."""
    pairs = []
    for key, value in metrics.items():
        if isinstance(value, dict) and "before" in value and "after" in value:
            pairs.append((key, value["before"], value["after"]))
        elif key.endswith("_before") and f"{key[:-7]}_after" in metrics:
            pairs.append((key[:-7], value, metrics[f"{key[:-7]}_after"]))
    return ", ".join(f"{k} {_number(b)}→{_number(a)}" for k, b, a in pairs)


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def run_profiles(args) -> int:
    """Run ``avatar-app profiles ...``; user errors are raised as :class:`AvatarError` for the CLI to print."""
    root = profiles_root()
    action = args.profiles_action
    if action == "list":
        profiles = list_profiles(root)
        if not profiles:
            print(f"no profiles yet (in {root}); create one with 'avatar-app personalize'")
            return 0
        width = max(len(p.name) for p in profiles)
        for p in profiles:
            print(f"{p.name:<{width}}  {p.created}  {metric_summary(p.metrics)}".rstrip())
        return 0
    if action == "show":
        profile = load_profile(args.name, root)
        info = json.loads((profile.path / INFO_FILE).read_text(encoding="utf-8"))
        print(json.dumps(info, indent=2))
        print(f"folder:  {profile.path}")
        print(f"weights: {profile.weights_path} ({profile.weights_path.stat().st_size / 1e6:.1f} MB)")
        print(f"source:  {profile.source_path}")
        if profile.neutral is not None:
            print(f"neutral: {profile.path / NEUTRAL_FILE}")
        return 0
    if action == "delete":
        validate_name(args.name)
        folder = root / args.name
        if not folder.is_dir():
            raise _unknown(args.name, root)
        if not args.yes:
            if not _stdin_is_tty():
                raise AvatarError(f"Not deleting profile '{args.name}' without confirmation because there is no "
                                  "terminal to ask on; add --yes to delete it.")
            try:
                answer = input(f"Delete profile '{args.name}' ({folder})? [y/N] ")
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                print("not deleted")
                return 1
        delete_profile(args.name, root)
        print(f"deleted profile '{args.name}'")
        return 0
    raise UsageError(f"Unknown profiles action {action!r}; use list, show or delete.")


__all__ = ["add_profiles_parser", "metric_summary", "run_profiles"]
