#!/usr/bin/env bash
# Set up (idempotent), then replay a UCSD Ped2 test clip through Vigil: events as JSON lines on stdout,
# logs and a summary on stderr, metrics on http://127.0.0.1:9108/metrics while it runs.
#   bash scripts/demo.sh                 # Test004, as fast as the machine allows
#   bash scripts/demo.sh --realtime      # paced at the clip's 10 fps
#   CLIP=Test001 bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export YOLO_OFFLINE=1
shared=${VIGIL_SHARED:-../shared}
clip="$shared/data/ucsd_ped2/test/${CLIP:-Test004}.mp4"
echo "demo: replaying $clip (metrics: http://127.0.0.1:9108/metrics, events: var/events.db)" >&2
exec .venv/bin/vigil replay "$clip" -c config.yaml "$@"
