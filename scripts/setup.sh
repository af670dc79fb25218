#!/usr/bin/env bash
# Idempotent set-up: system packages, .venv, Python packages from requirements.lock. Quick when nothing
# changed. Everything it prints goes to stderr: stdout is kept for the events of the command after it.
#   PYTHON=python3.11 bash scripts/setup.sh    # choose the interpreter for a new .venv
set -euo pipefail
cd "$(dirname "$0")/.."
exec 3>&1 1>&2  # apt-get and pip talk on stdout: send it all to stderr

APT_PACKAGES=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
              mosquitto libgl1 libglib2.0-0 chromium)  # chromium: the console's browser tests
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)

missing=()
if command -v dpkg >/dev/null 2>&1; then
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
fi
if ((${#missing[@]})); then
    echo "setup: installing system packages: ${missing[*]}" >&2
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { echo "setup: need root or sudo for apt-get" >&2; exit 1; }
        SUDO=(sudo)
    fi
    "${SUDO[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi

if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv" >&2
    "${PYTHON:-python3}" -m venv .venv
fi

# requirements.lock pins every package but torch/torchvision (by version here, so a CUDA machine keeps
# its own build) with hashes; `bash scripts/lock.sh` re-resolves it after pyproject.toml changes.
locked=$(sed -n 's/^# pyproject-dependencies-sha256: //p' requirements.lock)
if [[ $locked != $(python3 scripts/dependency_hash.py pyproject.toml) ]]; then
    echo "setup: requirements.lock is stale against pyproject.toml's dependencies: run bash scripts/lock.sh"
fi
pip_install() { # quiet, without the warnings about this machine's local package folders
    local status=0
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; } || status=$?
    return "$status"
}
# The stamp holds a hash of what the install depends on; reinstall only when it changes.
stamp=.venv/.vigil-setup-stamp
want=$( { cat pyproject.toml requirements.lock; echo "${TORCH_PINS[*]}"; } | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" || ! -x .venv/bin/vigil ]] \
   || ! .venv/bin/python -c "import importlib.metadata as m; m.version('vigil')" 2>/dev/null; then
    echo "setup: installing Python packages into .venv from requirements.lock"
    pip_install "${TORCH_PINS[@]}"
    pip_install --require-hashes --no-deps -r requirements.lock
    pip_install --no-deps -e .
    .venv/bin/python -m pip check  # the lock and torch's own dependencies agree
    echo "$want" > "$stamp"
fi
# the commit-msg hook (subjects of at most 72 characters) for whoever commits from this clone
if [[ -d .git && -z $(git config --get core.hooksPath || true) ]]; then
    git config core.hooksPath .githooks
fi
echo "setup: ok ($(.venv/bin/python --version))" >&2
