#!/usr/bin/env bash
# The real-faces training runs (issue 12) on a GPU machine: several jobs at once, each on the GPU it names.
#   BUDGET=440 bash tools/train_real.sh OUT base
#       GPU 0: `full` from scratch; GPU 1: `lite` from scratch
#   BUDGET=360 INIT=W bash tools/train_real.sh OUT continue
#       GPU 0: `full` again from W; GPU 1: the enhancer from W
#   BUDGET=360 bash tools/train_real.sh OUT NAME:GPU:STAGE:CONFIG[:INIT[:KEY=VALUE,...]] ...
#       any jobs: CONFIG names configs/real-CONFIG.toml, the KEY=VALUEs are `train --set` overrides
#   STOP=480 BUDGET=0 bash tools/train_real.sh OUT JOB ...; then RESUME=1 STOP=480 BUDGET=0 ... the same jobs
#       a run longer than one call: each call trains about STOP seconds of it (`train --stop-after`) and
#       the next continues it (`--resume`, from runs/NAME, which stays only while the machine does: the
#       optimizer state is not copied to OUT). Give every call the same BUDGET and jobs, and with BUDGET=0
#       a `steps=N` in each job's settings (the configs say 100000). STOP counts from the first step, so
#       leave the data's set-up (a minute or two) and the copies outside it; it counts the compilation of the
#       first steps (a cross-pairs run beside another got 243 of 1200 steps from STOP=300, the next call 600)
# The data comes as PACK (default .pack), made here by `tools/dataset_pack.py pack` (videos + landmarks:
# the GPU machine needs no mediapipe or dlib); each job's EMA weights (fp16), metrics and log land in OUT.
set -euo pipefail
out=${1:?output folder}
shift
PACK=${PACK:-.pack}
DATA=${DATA:-/tmp/real}
BUDGET=${BUDGET:-330}
case ${1:-base} in
    base) jobs=("full:0:full:full" "lite:1:full:lite") ;;
    continue) jobs=("full:0:full:full:${INIT:?INIT=weights to continue from}" "enhancer:1:enhancer:enhancer:$INIT") ;;
    *) jobs=("$@") ;;
esac
mkdir -p "$out" runs
[ -f "$DATA/manifest.json" ] || python3 tools/dataset_pack.py unpack "$PACK" "$DATA" --workers "$(nproc)"
for job in "${jobs[@]}"; do
    IFS=: read -r name gpu stage config init sets <<<"$job"
    extra=()
    [ -n "${init:-}" ] && extra+=(--init-weights "$init")
    [ -n "${STOP:-}" ] && extra+=(--stop-after "$STOP")
    [ "${RESUME:-0}" = 1 ] && extra+=(--resume)
    IFS=, read -ra pairs <<<"${sets:-}"
    for kv in "${pairs[@]}"; do extra+=(--set "$kv"); done
    CUDA_VISIBLE_DEVICES=$gpu python3 -m avatar_app train --stage "$stage" --config "configs/real-$config.toml" \
        --data "$DATA" --out "runs/$name" --time-budget "$BUDGET" --no-progress "${extra[@]}" \
        > "$out/$name.log" 2>&1 &
done
wait
for job in "${jobs[@]}"; do
    name=${job%%:*}
    cp "runs/$name/model_fp16.safetensors" "$out/${name}_model_fp16.safetensors" || echo "$name: no weights"
    cp "runs/$name/metrics.jsonl" "$out/${name}_metrics.jsonl" || true
done
tail -n 5 "$out"/*.log
