#!/usr/bin/env bash
# Re-resolve requirements.lock from pyproject.toml's ranges: the newest versions that satisfy them now,
# each with the hashes of its published files. Run after changing a dependency in pyproject.toml, then
# run the test suite and commit both files together:
#   bash scripts/lock.sh && bash scripts/test.sh
# torch and torchvision are left out (setup.sh installs them by version, so a CUDA machine keeps its own
# build), and so are the CUDA runtime packages that only a torch build brings (nvidia-*, cuda-*, triton).
set -euo pipefail
cd "$(dirname "$0")/.."
PIP_TOOLS=pip-tools==7.7.0
tools=.venv-lock
if [[ ! -x $tools/bin/pip-compile ]] || ! $tools/bin/pip show -q "${PIP_TOOLS%%==*}" 2>/dev/null \
   || [[ $($tools/bin/pip-compile --version | awk '{print $NF}') != "${PIP_TOOLS##*==}" ]]; then
    echo "lock: creating $tools with $PIP_TOOLS" >&2
    "${PYTHON:-python3}" -m venv "$tools"
    "$tools/bin/python" -m pip install --quiet "$PIP_TOOLS" >&2
fi
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
echo "lock: resolving pyproject.toml (extra: dev); takes a minute or two" >&2
"$tools/bin/pip-compile" pyproject.toml --extra dev --generate-hashes --strip-extras \
    --unsafe-package torch --unsafe-package torchvision --no-emit-index-url --no-emit-find-links \
    --no-header --quiet -o "$raw" 2> >(grep -v -e "is ignored: it is neither" -e "may be rejected by pip install" >&2)
{
    echo "# Exact versions and hashes of every Python package Vigil installs, but torch and torchvision"
    echo "# (pinned by version in scripts/setup.sh) and the CUDA runtime that a torch build brings."
    echo "# Made by 'bash scripts/lock.sh' (pip-compile) from pyproject.toml; do not edit by hand."
    echo "# Python: $("$tools/bin/python" -c 'import platform; print(platform.python_version())')"
    echo "# pyproject-dependencies-sha256: $(scripts/dependency_hash.py pyproject.toml)"
    # drop the CUDA runtime packages (a requirement block runs from its name line to the next name line)
    awk '
        /^[A-Za-z0-9]/ { skip = ($0 ~ /^(nvidia-(cublas|cuda|cudnn|cufft|cufile|curand|cusolver|cusparse|nccl|nvjitlink|nvshmem|nvtx)|cuda-|triton==)/) }
        /^# WARNING/ || /^# The following packages are considered/ { skip = 1 }
        !skip { print }
    ' "$raw"
} >requirements.lock
echo "lock: wrote requirements.lock ($(grep -c '^[A-Za-z0-9]' requirements.lock) packages)" >&2
