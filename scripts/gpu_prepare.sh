#!/usr/bin/env bash
# Fill the ignored folders that the two GPU-machine calls carry, and print their sizes (64 MiB per call).
#   .gpu/whl_a     openvino + openvino-telemetry (call A installs them into the warm machine's /tmp/site)
#   .gpu/whl_b     every other package the GPU image lacks (call B), cp312 manylinux x86-64 wheels
#   .gpu/shared    what ../shared holds for tests and benches (VIGIL_SHARED there): the two models,
#                  Ped2 Test004 and Train001-004 (call B fits the normality model there, on the GPU)
# Versions are this venv's. Usage: bash scripts/gpu_prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=$(realpath "${VIGIL_SHARED:-../shared}")
PY=.venv/bin/python
G=.gpu
grep -qxF '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
mkdir -p $G/whl_a $G/whl_b $G/shared/models $G/shared/data/ucsd_ped2/test $G/shared/data/ucsd_ped2/train

version() { $PY -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
download() { # DIR NAME...: cp312 manylinux x86-64 wheels of this venv's versions, no dependencies
    local dir=$1
    shift
    local specs=()
    for name in "$@"; do specs+=("$name==$(version "$name")"); done
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "$dir" "${specs[@]}" 2>&1 |
        grep -v "is ignored: it is neither a file nor a directory" || true
    for name in "$@"; do # exactly one wheel per package, and a cp312/abi3/py3 one
        local stem=${name//-/_}
        local found
        found=$(find "$dir" -maxdepth 1 -iname "${stem}-*.whl" | wc -l)
        [ "$found" = 1 ] || { echo "FATAL: $found wheels for $name in $dir" >&2; exit 1; }
    done
    if find "$dir" -name '*.whl' | grep -E -- '-cp3(1[01]|[0-9])-cp3' | grep -v abi3; then
        echo "FATAL: a wheel above is not for CPython 3.12" >&2
        exit 1
    fi
}
download $G/whl_a openvino openvino-telemetry
download $G/whl_b av pydantic pydantic_core annotated-types typing-inspection typing_extensions \
    ultralytics ultralytics-thop lap paho-mqtt

cp -u "$SHARED/models/yolo11n-pose.pt" $G/shared/models/
cp -ru "$SHARED/models/yolo11n_int8_openvino_model" $G/shared/models/
cp -u "$SHARED/data/ucsd_ped2/test/Test004.mp4" $G/shared/data/ucsd_ped2/test/
cp -u "$SHARED"/data/ucsd_ped2/train/Train00{1,2,3,4}.mp4 $G/shared/data/ucsd_ped2/train/
rm -f $G/shared/ped2.npz # the model is fitted on the GPU machine by the code that travels (format may change)

mib() { du -sb "$@" | awk '{s += $1} END {printf "%.1f", s / 1048576}'; }
repo=$( (git ls-files; git ls-files --others --exclude-standard) | sort -u | while read -r f; do
    [ -f "$f" ] && echo "$f"
done | tr '\n' '\0' | du -cb --files0-from=- | tail -1 | awk '{printf "%.1f", $1 / 1048576}')
echo "sizes (MiB): repo $repo; .gpu/whl_a $(mib $G/whl_a); .gpu/whl_b $(mib $G/whl_b);" \
    ".gpu/shared $(mib $G/shared)"
echo "call A total: $(awk "BEGIN {print $repo + $(mib $G/whl_a)}") MiB (limit 64)"
echo "call B total: $(awk "BEGIN {print $repo + $(mib $G/whl_b) + $(mib $G/shared)}") MiB (keep < 60)"
