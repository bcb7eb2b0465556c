#!/usr/bin/env bash
# Personalization plan variants over many people at fixed step counts (issue 14; docs/PERSONALIZATION_WARP_LOSS.md):
# with a fixed step count the result does not depend on the machine's speed, so the GPU can run the CPU plan's
# computation for many people at once (its 130 steps read the two cores' within 0.035 dB on average).
#   bash tools/plan_variants.sh pack PREPARED OUT [KEY...]  # here: a pack of those clips (default: the 17 training
#                                                          #   people the loss weight was chosen on, 12 MB; OUT:
#                                                          #   .packtr17 is git-ignored)
#   bash tools/plan_variants.sh run PACK OUT               # on the GPU machine, carrying PACK: every person x RUNS
#   bash tools/plan_variants.sh table OUT                  # the later segment's gain per variant
# RUNS: "NAME=PLAN:FIELD=VALUE,...@STEPS ..." (personalize_curve's --variant; "wd=warp+decoder:@130" is the plan
# as it is); PRESET (lite), START (personalize_curve's --start; default the lite CPU app's: the meta-learned start,
# "before" scored on lite-real), PAR (processes at once, 10), DEVICE (cuda), CACHE (training frames cached; default
# personalize's 48).  Each run writes OUT/KEY.NAME.json and
# .log; one whose .json exists is skipped, so a cut-off call resumes.  A quick check here: DEVICE=cpu, a few steps.
# A device call brings back at most 8 files, and a later call starts with $OUT empty: with OUT under $OUT, pack it
# into one file (tar) in the same call, after `table`, or the runs are lost.
set -euo pipefail
LITE_START=meta=assets/weights/lite-meta-2.safetensors@assets/weights/lite-real.safetensors
TRAIN17="FuxiVirtualHuman__styletalk__Obama_clip2 FuxiVirtualHuman__styletalk__andrew_clip_1
FuxiVirtualHuman__styletalk__KristiNoem bytedance__LatentSync__demo2_video tanshuai0219__EDTalk__pose_source2_part1
yerfor__MimicTalk__German_20s wyhsirius__LIA__driving3 FuxiVirtualHuman__styletalk__happyenglish_clip2
Hangz-nju-cuhk__Talking-Face_PC-AVS__741400163 OpenTalker__DPE__d jixinya__EAMM__surprised HelloVision__HelloMeme__xzy3
Weizhi-Zhong__IP_LAP__129 OpenTalker__StyleHEAT__video OpenTalker__SadTalker__RD_Radio2_000
yoyo-nb__Thin-Plate-Spline-Motion-Model__driving filby89__spectre__W040_level_3_happy_029"
case ${1:?pack, run or table} in
    pack)
        prepared=${2:?prepared dataset} out=${3:?pack folder}; shift 3
        # shellcheck disable=SC2086  # the default list splits on whitespace
        python3 tools/dataset_pack.py pack "$prepared" "${VIDEOS:-../shared/data/real_clips}" "$out" \
            --clips ${*:-$TRAIN17} ;;
    run)
        pack=${2:?pack folder} out=${3:?output folder}
        data=${DATA:-/tmp/plan_variants_data}
        [ -f "$data/manifest.json" ] || python3 tools/dataset_pack.py unpack "$pack" "$data" --workers "$(nproc)"
        mkdir -p "$out"
        mapfile -t keys < <(python3 -c \
            "import json, sys; [print(c['key']) for c in json.load(open(sys.argv[1]))['clips']]" "$data/manifest.json")
        i=0
        for key in "${keys[@]}"; do
            for run in ${RUNS:?RUNS is required}; do
                spec=${run%@*} steps=${run##*@} name=${run%%=*}
                [ -f "$out/$key.$name.json" ] && continue
                (OMP_NUM_THREADS=2 python3 tools/personalize_curve.py --data "$data" --clips "$key" \
                    --preset "${PRESET:-lite}" --plans "$name" --variant "$spec" \
                    --start "${START:-$LITE_START}" \
                    --steps "$steps" --every-steps 100000 --device "${DEVICE:-cuda}" --warmup 0 --reference rest \
                    ${CACHE:+--cache-frames "$CACHE"} \
                    --out "$out/$key.$name.json.part" > "$out/$key.$name.log" 2>&1 \
                    && mv "$out/$key.$name.json.part" "$out/$key.$name.json" || echo "$key $name failed") &
                i=$((i + 1)); (( i % ${PAR:-10} == 0 )) && wait
            done
        done
        wait
        bash "$0" table "$out" ;;
    table)
        python3 - "${2:?output folder}" <<'PY'
import glob, json, os, statistics, sys
gains = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    for person, runs in json.load(open(path)).items():
        for run in runs.values():
            curve = run["curve"]
            gains.setdefault(run["plan"], {})[person] = curve[-1]["later_psnr"] - curve[0]["later_psnr"]
for plan, by in sorted(gains.items()):
    g = list(by.values())
    print(f"{plan:16s} {len(g):3d} people: mean {statistics.mean(g):+.2f}  median {statistics.median(g):+.2f}  "
          f">= +1.5: {sum(x >= 1.5 for x in g)}  lowest {min(g):+.2f}")
PY
        ;;
    *) echo "unknown command $1" >&2; exit 2 ;;
esac
