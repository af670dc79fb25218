#!/usr/bin/env bash
# Set up (idempotent), learn what is normal from the UCSD Ped2 training clips (once; the model is kept
# in var/models/ped2.npz), then replay a Ped2 test clip through Vigil: alerts as JSON lines on stdout,
# logs and a summary on stderr, metrics on http://127.0.0.1:9108/metrics while it runs.
#   bash scripts/demo.sh                 # Test004 (a cyclist and a cart), as fast as the machine allows
#   bash scripts/demo.sh --realtime      # paced at the clip's 10 fps
#   CLIP=Test001 bash scripts/demo.sh
#   REFIT=1 bash scripts/demo.sh         # learn the model again
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export YOLO_OFFLINE=1
shared=${VIGIL_SHARED:-../shared}
data="$shared/data/ucsd_ped2"
model=var/models/ped2.npz
# a model this Vigil cannot read (another version), or learnt with other perception settings (config.yaml
# changed since): learn it again. One interpreter start for both checks (importing the stack takes seconds).
if [[ -f $model && -z ${REFIT:-} ]] && ! .venv/bin/python -c "
import sys
from pipeline.assembly import stale_settings
from pipeline.configfile import load_config
from pipeline.errors import ModelError
from stages.normality import NormalityModel
try:
    model = NormalityModel.load(sys.argv[1])
except ModelError:
    print('demo: ' + sys.argv[1] + ' was made by another Vigil version; learning it again', file=sys.stderr)
    sys.exit(1)
stale = stale_settings(model, load_config('config.yaml'))
print('demo: config.yaml measures differently from the model (' + '; '.join(stale[:3]) + '); learning it again', file=sys.stderr) if stale else None
sys.exit(1 if stale else 0)" "$model"; then
    REFIT=1
fi
if [[ ! -f $model || -n ${REFIT:-} ]]; then
    echo "demo: learning normality for camera 'ped2' from $data/train (16 clips; minutes on a 2-core CPU)" >&2
    .venv/bin/vigil fit --camera ped2 "$data/train" -c config.yaml --out "$model"
fi
clip="$data/test/${CLIP:-Test004}.mp4"
echo "demo: replaying $clip as camera 'ped2' (metrics: http://127.0.0.1:9108/metrics, events: var/events.db)" >&2
exec .venv/bin/vigil replay "$clip" --camera ped2 -c config.yaml "$@"
