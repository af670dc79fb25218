#!/usr/bin/env bash
# GPU machine, call A: install the carried OpenVINO wheels (.gpu/whl_a) into /tmp/site, which the machine
# keeps while it stays warm (30 s after a call), so call B must follow at once. Run from the repo root:
#   bash bench/gpu/device_a.sh        (carry: .gpu/whl_a)
set -euo pipefail
cd "$(dirname "$0")/../.."
ls .gpu/whl_a/openvino-*.whl .gpu/whl_a/openvino_telemetry-*.whl >/dev/null ||
    { echo "FATAL: .gpu/whl_a not carried (run scripts/gpu_prepare.sh here, carry .gpu/whl_a)"; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/whl_a/*.whl
export PYTHONPATH=/tmp/site
python3 -c "import openvino as ov, sys; print('python', sys.version.split()[0], '| openvino', ov.__version__, \
ov.Core().available_devices, ov.__file__)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "call A done at $(date -u +%T): /tmp/site holds openvino; run call B now"
