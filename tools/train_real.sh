#!/usr/bin/env bash
# The real-faces training runs (issue 12) on a 2-GPU machine, two jobs at once, one per GPU:
#   BUDGET=440 bash tools/train_real.sh OUT base
#       GPU 0: `full` from scratch; GPU 1: `lite` from scratch
#   BUDGET=360 INIT=OUT/full_model_fp16.safetensors bash tools/train_real.sh OUT2 continue
#       GPU 0: `full` again from INIT; GPU 1: the enhancer from INIT
# The data comes as PACK (default .pack), made here by `tools/dataset_pack.py pack` (videos + landmarks:
# the GPU machine needs no mediapipe or dlib); each run's EMA weights (fp16), metrics and log land in OUT.
set -euo pipefail
out=${1:?output folder}
mode=${2:-base}
PACK=${PACK:-.pack}
DATA=${DATA:-/tmp/real}
BUDGET=${BUDGET:-330}
mkdir -p "$out" runs
[ -f "$DATA/manifest.json" ] || python3 tools/dataset_pack.py unpack "$PACK" "$DATA" --workers "$(nproc)"
case $mode in
    base) jobs=("full:full:" "lite:full:") ;;
    continue) jobs=("full:full:${INIT:?INIT=weights to continue from}" "enhancer:enhancer:$INIT") ;;
    *) echo "mode is base or continue, not $mode" >&2; exit 2 ;;
esac
gpu=0
for job in "${jobs[@]}"; do
    IFS=: read -r name stage init <<<"$job"
    CUDA_VISIBLE_DEVICES=$gpu python3 -m avatar_app train --stage "$stage" --config "configs/real-$name.toml" \
        --data "$DATA" --out "runs/$mode-$name" --time-budget "$BUDGET" --no-progress ${init:+--init-weights "$init"} \
        > "$out/$name.log" 2>&1 &
    gpu=$((gpu + 1))
done
wait
for job in "${jobs[@]}"; do
    name=${job%%:*}
    cp "runs/$mode-$name/model_fp16.safetensors" "$out/${name}_model_fp16.safetensors" || echo "$name: no weights"
    cp "runs/$mode-$name/metrics.jsonl" "$out/${name}_metrics.jsonl" || true
done
tail -n 5 "$out"/*.log
