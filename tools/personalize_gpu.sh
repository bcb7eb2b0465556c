#!/usr/bin/env bash
# Issue 14's GPU half over the 13 validation people: 10 s budgets from the rest frame (the portrait the app
# takes), the `full-real` model, three plans a person, one person at a time (docs/PERSONALIZATION_REAL_FACES.md):
#   full          the GPU plan as it ships (every weight, batch 4, constant rate)
#   fulld         the same with its rate falling along a cosine to 0 at the last step the budget buys
#   warp+decoder  the CPU's cached plan, on the full model
#   bash tools/personalize_gpu.sh pack PREPARED        # here: .pack13, the validation people's videos and tracking
#                                                      #   (about 7 MB; PREPARED from `avatar-app prepare`)
#   bash tools/personalize_gpu.sh run OUT [PART]       # on the GPU machine, carrying .pack13: PART 0 the first 7
#                                                      #   people, 1 the other 6, all when left out (7 people ~8 min)
# Each person: OUT/KEY.json (personalize_curve's curves) and OUT/KEY.log; a person whose .json exists is skipped,
# so a cut-off call resumes (BUDGET=3 DEVICE=cpu: a quick check here).  No mediapipe or dlib is needed there:
# the pack holds what tracking found.
set -euo pipefail
PACK=${PACK:-.pack13}
case ${1:?pack or run} in
    pack)
        videos=${VIDEOS:-../shared/data/real_clips}
        python tools/dataset_pack.py pack "${2:?prepared dataset}" "$videos" "$PACK" --split val ;;
    run)
        out=${2:?output folder}
        export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
        DATA=${DATA:-/tmp/r13}
        [ -f "$DATA/manifest.json" ] || python3 tools/dataset_pack.py unpack "$PACK" "$DATA" --workers "$(nproc)"
        mkdir -p "$out"
        mapfile -t keys < <(python3 -c \
            "import json, sys; [print(c['key']) for c in json.load(open(sys.argv[1]))['clips']]" "$DATA/manifest.json")
        case ${3:-all} in
            0) keys=("${keys[@]:0:7}") ;;
            1) keys=("${keys[@]:7}") ;;
            all) ;;
            *) echo "PART is 0, 1 or left out" >&2; exit 2 ;;
        esac
        for key in "${keys[@]}"; do
            [ -f "$out/$key.json" ] && continue
            python3 tools/personalize_curve.py --data "$DATA" --clips "$key" --preset full \
                --start full=assets/weights/full-real.safetensors --variant fulld=full:decay=1 \
                --plans full fulld warp+decoder --budget "${BUDGET:-10}" --every 2.5 --device "${DEVICE:-cuda}" \
                --reference rest --out "$out/$key.json.part" > "$out/$key.log" 2>&1 \
                && mv "$out/$key.json.part" "$out/$key.json" || echo "$key failed: see $out/$key.log"
            grep -E "later .* dB" "$out/$key.log" || true
        done ;;
    *) echo "unknown command $1" >&2; exit 2 ;;
esac
