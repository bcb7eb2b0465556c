"""The first personalization in a fresh process on a GPU: where the wait goes (issue 14).

Personalizes the shipped ``full`` weights twice in one process on the recording part (first
``--record`` seconds) of the longest validation clip, and prints for each run when its first step
and its 10th ended (wall seconds from the call, and seconds of the budget) and how many steps the
budget bought.  The first run pays the GPU's kernel loading; the second shows the warm figures.

    python tools/personalize_cold.py --data PREPARED [--budget 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

t_import = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar_app.models.portrait import load_checkpoint  # noqa: E402
from avatar_app.models.assets import WEIGHTS_DIR  # noqa: E402
from avatar_app.train.manifest import read_manifest  # noqa: E402
from avatar_app.train.split import split_clips  # noqa: E402
from avatar_app.train.eval_clips import load_clip  # noqa: E402
from avatar_app.train.personalize import ClipFrames, personalize  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a prepared dataset")
    p.add_argument("--budget", type=float, default=10.0)
    p.add_argument("--record", type=float, default=10.0, help="seconds of the clip personalization gets")
    p.add_argument("--weights", default=str(WEIGHTS_DIR / "full-real.safetensors"))
    args = p.parse_args()
    manifest = read_manifest(args.data)
    entries = {c["key"]: c for c in manifest["clips"]}
    key = max(split_clips(list(entries.values()), 0.15)[1], key=lambda k: int(entries[k]["frames"]))
    clip, why = load_clip(args.data, entries[key])
    if clip is None:
        print(f"{key}: {why}")
        return 1
    frames = np.flatnonzero(clip.valid)[:int(args.record * float(entries[key].get("fps") or 25.0))]
    recording = ClipFrames([clip.image(f) for f in frames], [clip.landmarks[f] for f in frames], reference=0)
    identity = clip.embedding if clip.embedding is not None else np.zeros(128, np.float32)
    t0 = time.perf_counter()
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    base = load_checkpoint(args.weights).cuda()
    print(f"{key}: {len(frames)} frames; imports and data {t0 - t_import:.1f} s, CUDA start and model "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    for run in ("cold", "warm"):
        marks: list[tuple[int, float, float]] = []
        start = time.perf_counter()
        r = personalize(recording, base, identity, budget_s=args.budget, device="cuda",
                        progress=lambda e: marks.append((e["step"], time.perf_counter() - start, e["elapsed"])))
        print(f"{run}: {r.steps} steps in the {args.budget:g} s budget; first step ended {marks[0][1]:.2f} s after the "
              f"call ({marks[0][2]:.2f} s into the budget), step 10 at {marks[9][1]:.2f} s; the call took "
              f"{time.perf_counter() - start:.1f} s; held-out {r.before['psnr']:.2f} -> {r.after['psnr']:.2f} dB",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
