#!/usr/bin/env bash
# Idempotent set-up: system packages, .venv, Python packages. Quick when nothing changed.
#   PYTHON=python3.11 bash scripts/setup.sh    # choose the interpreter for a new .venv
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
              mosquitto libgl1 libglib2.0-0)
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
    "${SUDO[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi

if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv" >&2
    "${PYTHON:-python3}" -m venv .venv
fi

# The stamp holds a hash of what the install depends on; reinstall only when it changes.
stamp=.venv/.vigil-setup-stamp
want=$( { cat pyproject.toml; echo "${TORCH_PINS[*]}"; } | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" || ! -x .venv/bin/vigil ]] \
   || ! .venv/bin/python -c "import importlib.metadata as m; m.version('vigil')" 2>/dev/null; then
    echo "setup: installing Python packages into .venv" >&2
    .venv/bin/python -m pip install --quiet "${TORCH_PINS[@]}"
    .venv/bin/python -m pip install --quiet -e ".[dev]"
    echo "$want" > "$stamp"
fi
echo "setup: ok ($(.venv/bin/python --version))" >&2
