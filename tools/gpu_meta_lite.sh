#!/usr/bin/env bash
# Meta-learn the lite model's initialisation for the CPU personalization plan on the GPU machine (issue 14), then
# measure what it buys: the personalization curve of the two held-out clips from the base and from the meta weights.
#   bash tools/gpu_meta_lite.sh train BUDGET_S     # carry .pack: unpack the data pack (once), then Reptile with
#                                                  #   configs/real-meta-lite.toml for BUDGET_S seconds into $RUN
#   bash tools/gpu_meta_lite.sh more STEPS         # a later call while the machine is warm: resume $RUN to STEPS
#                                                  #   outer steps in all (a device call lasts at most 600 s)
#   bash tools/gpu_meta_lite.sh curve OUT          # the curves (below) into OUT, and a table of them
#   bash tools/gpu_meta_lite.sh all OUT BUDGET_S   # train, then curve, then the run's config and metrics into OUT
# e.g. run(command="bash tools/gpu_meta_lite.sh all $OUT 330", carry=[".pack"]) (unpacking takes part of the 600 s).
# The curve is docs/PERSONALIZATION.md's protocol: tools/personalize_curve.py, the CPU plan (warp+decoder) on the CPU,
# one core per run (taskset), exactly STEPS (112: what 30 s bought on two idle cores) steps scored every EVERY (28),
# the later segment on 24 frames; clips ls_demo3 and vt_529 (validation people: neither the base nor Reptile saw
# them, val_fraction 0.15 as both were trained with); starts: base ($BASE), meta ($RUN/model.safetensors, the EMA
# weights) and meta_raw ($RUN/raw.safetensors).  The pack's frames are re-encoded, so compare base and meta measured
# here, not against the tables measured on the prepared folder.
# Settings (environment): DATA (/tmp/real), PACK (.pack), RUN (/tmp/meta-lite), BASE
# (assets/weights/lite-real.safetensors), DEVICE (cuda), STEPS (112), EVERY (28), META_STEPS (train that many outer
# steps instead of a time budget: a smoke run), WORKERS (the config's loader workers; 0 on a 2-core machine).
set -euo pipefail
DATA=${DATA:-/tmp/real} RUN=${RUN:-/tmp/meta-lite} BASE=${BASE:-assets/weights/lite-real.safetensors}
CLIPS=(bytedance__LatentSync__demo3_video williamyang1991__VToonify__529)

unpack() {
    [ -f "$DATA/manifest.json" ] || python3 tools/dataset_pack.py unpack "${PACK:-.pack}" "$DATA" --workers "$(nproc)"
}

train() {  # $1: seconds of meta-training
    unpack
    local length=(--time-budget "$1") extra=()
    [ -n "${META_STEPS:-}" ] && length=(--steps "$META_STEPS")
    [ -n "${WORKERS:-}" ] && extra=(--set "num_workers=$WORKERS")
    python3 -m avatar_app train --stage meta --config configs/real-meta-lite.toml --data "$DATA" \
        --init-weights "$BASE" "${length[@]}" "${extra[@]}" --device "${DEVICE:-cuda}" --out "$RUN" --no-progress
}

more() {  # $1: outer steps in all
    local extra=()
    [ -n "${WORKERS:-}" ] && extra=(--set "num_workers=$WORKERS")
    python3 -m avatar_app train --stage meta --config "$RUN/config.toml" --data "$DATA" --steps "$1" \
        --set time_budget_s=0 "${extra[@]}" --device "${DEVICE:-cuda}" --out "$RUN" --resume --no-progress
}

curve() {  # $1: output folder
    local out=$1 core=0 pin=() pids=() logs=() failed=()
    mkdir -p "$out"
    [ -f "$RUN/model.safetensors" ] || { echo "no meta weights in $RUN: train first" >&2; exit 3; }
    for clip in "${CLIPS[@]}"; do
        for start in "base=$BASE" "meta=$RUN/model.safetensors" "meta_raw=$RUN/raw.safetensors"; do
            name=${start%%=*}
            command -v taskset > /dev/null && pin=(taskset -c $((core % $(nproc))))
            core=$((core + 1))
            OMP_NUM_THREADS=1 "${pin[@]}" python3 tools/personalize_curve.py --data "$DATA" --clips "$clip" \
                --start "$start" --preset lite --plans warp+decoder --steps "${STEPS:-112}" \
                --every-steps "${EVERY:-28}" --later-frames 24 --val-fraction 0.15 --device cpu \
                --out "$out/curve_${name}_$clip.json" > "$out/curve_${name}_$clip.log" 2>&1 &
            pids+=($!) logs+=("$out/curve_${name}_$clip.log")
        done
    done
    for k in "${!pids[@]}"; do wait "${pids[$k]}" || failed+=("${logs[$k]}"); done
    python3 - "$out" <<'EOF' | tee "$out/summary.md"
import json, sys
from pathlib import Path
print("| clip | start | steps | interleaved (dB): start -> end (gain) | later segment: start -> points -> end (gain) |")
print("|---|---|---:|---|---|")
for path in sorted(Path(sys.argv[1]).glob("curve_*.json")):
    for clip, runs in json.loads(path.read_text()).items():
        for label, r in runs.items():
            c = r["curve"]
            a, b = c[0], c[-1]
            later = " / ".join(f"{p['later_psnr'] - a['later_psnr']:+.2f}" for p in c[1:])
            print(f"| {clip} | {label} | {r['steps']} | {a['psnr']:.2f} -> {b['psnr']:.2f} ({b['psnr'] - a['psnr']:+.2f}) "
                  f"| {a['later_psnr']:.2f} -> {later} -> {b['later_psnr']:.2f} ({b['later_psnr'] - a['later_psnr']:+.2f}) |")
EOF
    if [ ${#failed[@]} -gt 0 ]; then  # a run that failed has no row: say so, and fail
        for log in "${failed[@]}"; do echo "curve run failed: $log" >&2; tail -n 3 "$log" >&2; done
        exit 4
    fi
}

case ${1:?train, more, curve or all} in
    train) train "${2:?seconds of meta-training}" ;;
    more) more "${2:?outer steps in all}" ;;
    curve) curve "${2:?output folder}" ;;
    all)
        out=${2:?output folder}
        mkdir -p "$out"
        train "${3:?seconds of meta-training}" 2>&1 | tee "$out/train.log"
        curve "$out"
        for f in config.toml metrics.jsonl; do [ ! -f "$RUN/$f" ] || cp "$RUN/$f" "$out/"; done ;;
    *) echo "unknown command $1" >&2; exit 2 ;;
esac
