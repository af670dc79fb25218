#!/usr/bin/env bash
# Set up (idempotent), then run the test suite. Extra arguments go to pytest: bash scripts/test.sh -x -q
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export YOLO_OFFLINE=1
status=0
.venv/bin/python -m pytest --durations=15 "$@" || status=$?
if [[ $status -eq 5 ]]; then
    echo "test: pytest collected no tests: that is a failure, not a pass" >&2
fi
exit "$status"
