#!/usr/bin/env bash
# GPU machine, call B (right after call A, on the same warm machine): install the other carried wheels
# into /tmp/site, check the environment, then the measurements, each under its own timeout, most valuable
# first, logs and JSON into $OUT (at most 8 files come back):
#   a) tests/test_cuda_paths.py on the device (+ $GPU_EXTRA_TESTS)                 pytest.log
#   p) pose per frame, CUDA graphs vs eager, alone and beside busy threads         pose_profile.json
#   b) perception graph vs naive loop, Test004 and 640x360 (bench.gpu.perception)  perception.{log,json}
#   c) N concurrent 1080p cameras at 10 analysed fps (bench.bench_gpu_streams), full graph with a
#      Ped2 model fitted there first (c0, on the device; perception only if that fails), event media
#      off; then c2: N = $MEDIA_N (4) with event snapshots + clips on    streams.{log,json}, streams_media.json
# Run from the repo root:   bash bench/gpu/device_b.sh     (carry: .gpu/whl_b, .gpu/shared)
# Dry run here on the CPU:  SKIP_INSTALL=1 PY=.venv/bin/python VIGIL_DEVICE=cpu QUICK=1 OUT=/tmp/gpu_dry \
#                           bash bench/gpu/device_b.sh
# Knobs: STREAMS ("1 2 4 8 16"), DURATION (10), WARMUP (5), OV_THREADS (4), PERC_CLIPS, FIT_MAX_FRAMES (90),
#        T_TESTS/T_PERC/T_FIT/T_STREAMS/T_MEDIA (step timeouts, s: 90/75/50/150/40),
#        GPU_EXTRA_TESTS (more test files for step a), STEPS (abc: which steps run).
set -uo pipefail
cd "$(dirname "$0")/../.."
START=$(date +%s)
log() { echo "=== [$(($(date +%s) - START))s] $*"; }
OUT=${OUT:-var/gpu_out}
mkdir -p "$OUT"
PY=${PY:-python3}
DEVICE=${VIGIL_DEVICE:-cuda}
QUICK=${QUICK:-0}
export VIGIL_SHARED=$PWD/.gpu/shared YOLO_OFFLINE=1 YOLO_VERBOSE=False PYTHONUNBUFFERED=1
export YOLO_CONFIG_DIR=${YOLO_CONFIG_DIR:-/tmp/vigil-yolo-cfg} VIGIL_TEST_DEVICE=$DEVICE
if [ "$QUICK" = 1 ]; then # the CPU dry run: small N, short windows
    STREAMS=${STREAMS:-1 2} DURATION=${DURATION:-5} WARMUP=${WARMUP:-4} OV_THREADS=${OV_THREADS:-1} MEDIA_N=1
    PERC_CLIPS=${PERC_CLIPS:-Test004}
fi
STREAMS=${STREAMS:-1 2 4 8 16} DURATION=${DURATION:-10} WARMUP=${WARMUP:-5} OV_THREADS=${OV_THREADS:-4}
PERC_CLIPS=${PERC_CLIPS:-Test004 640x360} STEPS=${STEPS:-apbc}

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    ls .gpu/whl_b/av-*.whl >/dev/null ||
        { echo "FATAL: .gpu/whl_b not carried (run scripts/gpu_prepare.sh here, carry .gpu/whl_b)"; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .gpu/whl_b/*.whl || { echo "FATAL: installing .gpu/whl_b failed"; exit 2; }
    export PYTHONPATH=/tmp/site
    log "installed .gpu/whl_b into /tmp/site"
fi
{
    date -u
    nvidia-smi || echo "no nvidia-smi"
    nproc
    free -g
} >"$OUT/env.txt" 2>&1
$PY -m bench.gpu.check_env --device "$DEVICE" 2>&1 | tee -a "$OUT/env.txt"
env_rc=${PIPESTATUS[0]}
head -12 "$OUT/env.txt"
if [ "$env_rc" = 3 ]; then # no OpenVINO: only the tests that need no detector, then stop
    log "OPENVINO MISSING - call A's /tmp/site is gone. Running the detector-free CUDA tests only; rerun A then B."
    timeout "${T_TESTS:-90}" $PY -m pytest tests/test_cuda_paths.py -v -p no:cacheprovider \
        -k "device_is or knn or coreset or dynamics" 2>&1 | tee "$OUT/pytest.log" | tail -25
    exit 3
elif [ "$env_rc" != 0 ]; then
    echo "FATAL: environment incomplete (see above)"
    exit 2
fi

if [[ $STEPS == *a* ]]; then
    log "a) CUDA path tests on $DEVICE"
    # shellcheck disable=SC2086  # GPU_EXTRA_TESTS is a list of paths
    timeout "${T_TESTS:-90}" $PY -m pytest tests/test_cuda_paths.py "tests/test_sources.py::test_cuda_decoding_gives_the_same_pictures" \
        "tests/test_sources.py::test_auto_hardware_decoding_needs_a_gpu" ${GPU_EXTRA_TESTS:-} -v -p no:cacheprovider \
        -o addopts="" 2>&1 | tee "$OUT/pytest.log" | grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed|Error" | tail -40
    log "a) rc=${PIPESTATUS[0]}"
fi

if [[ $STEPS == *p* ]]; then
    log "p) pose per frame on $DEVICE: CUDA graphs vs eager, alone and beside busy Python threads"
    timeout "${T_PROFILE:-60}" $PY -m bench.gpu.profile_pose --device "$DEVICE" --out "$OUT/pose_profile.json" \
        2>&1 | grep -E "^(eager|graphs)|Error" | tail -4
    log "p) rc=${PIPESTATUS[0]}"
fi

if [[ $STEPS == *b* ]]; then
    log "b) perception graph vs naive on $DEVICE ($PERC_CLIPS)"
    # shellcheck disable=SC2086
    timeout "${T_PERC:-75}" $PY -m bench.gpu.perception --device "$DEVICE" --clips $PERC_CLIPS \
        --ov-threads "$OV_THREADS" --out "$OUT/perception.json" >"$OUT/perception.log" 2>&1
    log "b) rc=$?"
    grep -E "fps|ms/frame per stage|Error|error" "$OUT/perception.log" | grep -v "^Ultralytics\|OpenVINO:" | tail -12
fi

if [[ $STEPS == *c* ]]; then
    log "c0) fit the Ped2 model on Train001-004 (${FIT_MAX_FRAMES:-90} frames each) with $DEVICE, for c)"
    MODEL=/tmp/vigil-gpu-ped2.npz
    rm -f "$MODEL"
    printf 'detector:\n  model: %s\n  inference_threads: %s\npose:\n  model: %s\n  device: %s\n' \
        "$VIGIL_SHARED/models/yolo11n_int8_openvino_model" "$OV_THREADS" "$VIGIL_SHARED/models/yolo11n-pose.pt" \
        "$DEVICE" >/tmp/vigil-gpu-fit.yaml
    printf 'appearance:\n  model: %s\n  device: %s\nscoring:\n  device: %s\n' \
        "$VIGIL_SHARED/models/yolo11n-pose.pt" "$DEVICE" "$DEVICE" >>/tmp/vigil-gpu-fit.yaml
    FIT_FRAMES=(--max-frames "${FIT_MAX_FRAMES:-90}")
    [ "$QUICK" = 1 ] && FIT_FRAMES=(--max-frames 40)
    t0=$(date +%s)
    timeout "${T_FIT:-50}" $PY -m pipeline.cli fit "$VIGIL_SHARED"/data/ucsd_ped2/train/Train00{1,2,3,4}.mp4 \
        --camera ped2 -c /tmp/vigil-gpu-fit.yaml --out "$MODEL" "${FIT_FRAMES[@]}" 2>&1 | grep -v "^\s*$" | tail -3
    log "c0) rc=${PIPESTATUS[0]}, $(($(date +%s) - t0)) s"
    MODEL_ARGS=()
    if [ -s "$MODEL" ]; then MODEL_ARGS=(--model "$MODEL"); else log "c0) no model: c) runs the perception graph only"; fi

    log "c) concurrent 1080p cameras on $DEVICE (N = $STREAMS, ${DURATION}s each)"
    # shellcheck disable=SC2086
    timeout "${T_STREAMS:-150}" $PY -m bench.bench_gpu_streams --device "$DEVICE" "${MODEL_ARGS[@]}" \
        --streams $STREAMS --duration "$DURATION" --warmup "$WARMUP" --ov-threads "$OV_THREADS" \
        --out "$OUT/streams.json" >"$OUT/streams.log" 2>&1
    log "c) rc=$?"
    grep -E "^vigil|ms/frame|GPU|held|not held|clip |Error|error" "$OUT/streams.log" | tail -30
    MEDIA_N=${MEDIA_N:-4}
    log "c2) the same with event snapshots + clips written (N = $MEDIA_N)"
    timeout "${T_MEDIA:-40}" $PY -m bench.bench_gpu_streams --device "$DEVICE" "${MODEL_ARGS[@]}" \
        --streams "$MEDIA_N" --duration "$DURATION" --warmup "$WARMUP" --ov-threads "$OV_THREADS" --media \
        --out "$OUT/streams_media.json" >>"$OUT/streams.log" 2>&1
    log "c2) rc=$?"
    grep -E "^vigil|ms/frame|GPU|Error|error" "$OUT/streams.log" | tail -4
fi

rm -f "$OUT"/streams.n*.json
log "done; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
