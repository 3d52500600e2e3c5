#!/usr/bin/env bash
# Train: `python -m mlm.egg train ARGS...`, the way the reference trainer's launcher ran it.
#
#   scripts/train.sh --preset small --eval-every 50
#
# - Rebuilds the C core first when a csrc/ file is newer than the extension that
#   `python -m mlm.egg` would import from the current directory: in place when that is this
#   checkout's mlm/ (running from the checkout), else with a quiet `pip install` of the checkout.
# - Keeps a Mac awake for the whole run (caffeinate -i); elsewhere there is nothing to do.
# - Appends everything the run prints, errors and crashes included, to ./training.log in the
#   current directory. The trainer keeps its own event log in <run dir>/training.log; this one
#   also catches what the trainer cannot log itself (tracebacks, a killed process).
#   The output is a pipe, so the terminal shows plain lines rather than the live view.
#
#   PYTHON  interpreter (default python3)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
PY=${PYTHON:-python3}
LOG=training.log

# Prints the mlm package directory and the C extension that `python -m mlm.egg` would import
# from here (both put the current directory first on sys.path), one per line, "-" if missing.
FIND_CORE='
import importlib.util
from pathlib import Path
pkg = importlib.util.find_spec("mlm")
try:
    core = importlib.util.find_spec("mlm.egg._core") if pkg else None
except ImportError:
    core = None
print(Path(pkg.submodule_search_locations[0]).resolve() if pkg else "-")
print(core.origin if core else "-")
'

rebuild_if_stale() {
    local pkg core
    { read -r pkg; read -r core; } < <("$PY" -c "$FIND_CORE")
    if [[ $core != - && -z $(find "$ROOT/csrc" \( -name '*.c' -o -name '*.h' \) -newer "$core" -print -quit) ]]
    then
        return 0
    fi
    if [[ $pkg == "$ROOT/mlm" ]]; then
        echo "train.sh: the C core is missing or older than csrc/: rebuilding it in place"
        (cd "$ROOT" && "$PY" mlm/egg/_build.py >/dev/null)
    else
        echo "train.sh: the C core is missing or older than csrc/: pip install $ROOT"
        "$PY" -m pip install -q "$ROOT"
    fi
}

train() {
    rebuild_if_stale
    local cmd=("$PY" -m mlm.egg train "$@")
    if command -v caffeinate >/dev/null; then
        cmd=(caffeinate -i "${cmd[@]}")
    fi
    echo "== $(date '+%Y-%m-%d %H:%M:%S') ${cmd[*]}"
    # Unbuffered, so the log and the terminal get each line when it happens.
    PYTHONUNBUFFERED=1 "${cmd[@]}"
}

# tee ignores Ctrl-C: the trainer saves a checkpoint and keeps printing while it stops, and a
# dead tee would lose those lines (or break the trainer's stdout).
train "$@" 2>&1 | (trap '' INT && exec tee -a "$LOG")
