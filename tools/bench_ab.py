"""The live path's speed of this checkout against another one, interleaved in one process.

On a shared machine, absolute times drift with the load by more than a change costs; a ratio
measured with both versions taking turns under the same load does not. The other checkout's
``avatar_app`` is copied to a temporary package (``avatar_base``) and both run
:func:`avatar_app.runtime.bench.bench_geometric` (mediapipe tracking of a camera frame,
retargeting, rasterising, the analytic flow and the warp) in alternating rounds.

    python tools/bench_ab.py --base /work/main --size 256 512 --rounds 6 --frames 40 --threads 1
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_base(base: Path, where: Path):
    """``base``'s ``avatar_app`` imported as ``avatar_base`` (its absolute self-imports renamed)."""
    pkg = where / "avatar_base"
    shutil.copytree(base / "avatar_app", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for f in pkg.rglob("*.py"):
        text = f.read_text(encoding="utf-8")
        renamed = re.sub(r"\bavatar_app\b", "avatar_base", text)
        if renamed != text:
            f.write_text(renamed, encoding="utf-8")
    sys.path.insert(0, str(where))
    return importlib.import_module("avatar_base.runtime.bench")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", type=Path, required=True, help="the other checkout (its repository root)")
    p.add_argument("--size", type=int, nargs="+", default=[256, 512])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--frames", type=int, default=40, help="timed frames per round and version")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from avatar_app.runtime import bench as this

    with tempfile.TemporaryDirectory() as tmp:
        base = load_base(args.base, Path(tmp))
        for size in args.size:
            runs: dict[str, dict[str, list[float]]] = {"base": {}, "this": {}}
            for _ in range(args.rounds):
                for name, mod in (("base", base), ("this", this)):
                    res = mod.bench_geometric(size, frames=args.frames, warmup=5)
                    for stage, (median, _) in [*res.stages_ms.items(), ("total", res.total_ms)]:
                        runs[name].setdefault(stage, []).append(median)
            print(f"size {size}: median over {args.rounds} rounds of each round's median ms (base -> this, ratio)")
            for stage in runs["this"]:
                a, b = float(np.median(runs["base"][stage])), float(np.median(runs["this"][stage]))
                print(f"  {stage:10s} {a:8.2f} -> {b:8.2f}  {b / max(a, 1e-9):.2f}")


if __name__ == "__main__":
    main()
