#!/usr/bin/env bash
# Build input.txt from a git repository (three.js by default) with `python -m mlm.data build`.
#
#   REPO_URL       repository URL or local path   (default https://github.com/mrdoob/three.js.git)
#   REPO_REF       branch, tag or commit SHA      (default: the remote's default branch)
#   HOLDOUT_REF    a later release: the files it adds go to <stem>.holdout.txt (default: none)
#   KEEP_VENDORED  1 keeps libs/, vendor/, *.min.js, minified and generated files (default: skip them)
#   INCLUDE        space-separated folders        (default "src examples/jsm")
#   OUT            corpus to write                (default input.txt; manifest beside it)
#   CACHE          folder for the clone           (default .cache/<repository name>)
#   PYTHON         interpreter                    (default python3)
# Extra arguments are passed on to `python -m mlm.data build`, e.g. --exclude "examples/jsm/loaders".
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
fi

REPO_URL="${REPO_URL:-https://github.com/mrdoob/three.js.git}"
REPO_REF="${REPO_REF:-}"
INCLUDE="${INCLUDE:-src examples/jsm}"
OUT="${OUT:-input.txt}"
CACHE="${CACHE:-}"

# Let a plain checkout of the project work without `pip install`.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}"

args=(build --repo "$REPO_URL" --include "$INCLUDE" --out "$OUT")
if [[ -n "$REPO_REF" ]]; then
    args+=(--ref "$REPO_REF")
fi
if [[ -n "${HOLDOUT_REF:-}" ]]; then
    args+=(--holdout-ref "$HOLDOUT_REF")
fi
if [[ "${KEEP_VENDORED:-0}" == "1" ]]; then
    args+=(--keep-vendored)
fi
if [[ -n "$CACHE" ]]; then
    args+=(--cache "$CACHE")
fi

# The build prints its size (MiB), file count and skipped files as its last line.
exec "${PYTHON:-python3}" -m mlm.data "${args[@]}" "$@"
