#!/usr/bin/env bash
# Test the C core on arm64 without an arm64 machine, and prove it agrees with x86_64.
#
# Cross-compiles tests/c/test_kernels.c (every kernel, GEMM, dot and elementwise, against the scalar one) and
# tests/c/test_core.c (forward, eval and two training steps of a tiny model, hashed) for
# aarch64 and runs them under qemu-user:
#   +dotprod build, -cpu max         sdot chosen at compile time (as on macOS, -mcpu=apple-m1)
#   baseline build, -cpu max         sdot chosen at load time from the hwcaps (Linux wheels)
#   baseline build, -cpu cortex-a72  no dotprod on that CPU: the smull fallback
# then builds the same programs natively (OpenMP; and the GCD loop on a pthread stand-in for
# libdispatch) and requires one core hash everywhere: checkpoints move between machines.
# Installs the cross toolchain and qemu with apt-get when missing (needs root).
# Exit status: 0 when everything agrees, 1 otherwise.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

missing=()
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
[[ -e /usr/aarch64-linux-gnu/include/stdio.h ]] || missing+=(libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
command -v gcc >/dev/null || missing+=(gcc)
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing ${missing[*]}; install them as root: apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# CORE, COMMON and build(): the same programs, sources and flags as the native tests in pytest.
source tests/c/build.sh

echo "building (${#CORE[@]} core sources)"
build "$WORK" x86 gcc openmp
build "$WORK" x86-gcd gcc gcd
build "$WORK" arm-dotprod aarch64-linux-gnu-gcc openmp -march=armv8.2-a+dotprod
build "$WORK" arm-base aarch64-linux-gnu-gcc openmp -march=armv8-a

failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# run LABEL COMMAND...: shows the output indented and keeps it in $out; non-zero exit fails.
out=
run() {
    local label=$1
    shift
    echo "--- $label"
    if out=$("$@" 2>&1); then :; else fail "$label exited with status $?"; fi
    sed 's/^/    /' <<<"$out"
}

arm() {
    local cpu=$1
    shift
    qemu-aarch64 -cpu "$cpu" -L /usr/aarch64-linux-gnu "$@"
}

# expect_dotprod LABEL 0|1: the NEON kernel must have picked the expected instructions.
expect_dotprod() {
    grep -qx "neon dotprod: $2" <<<"$out" || fail "$1: expected 'neon dotprod: $2'"
}

declare -A hashes=()
core_hash() {
    local label=$1
    shift
    run "$label" "$@"
    hashes[$label]=$(sed -n 's/^core hash: \([0-9a-f]*\)$/\1/p' <<<"$out")
    [[ -n ${hashes[$label]} ]] || fail "$label printed no core hash"
}

run "x86_64 kernels" "$WORK/x86-kernels"
run "arm64 +dotprod kernels (-cpu max)" arm max "$WORK/arm-dotprod-kernels"
expect_dotprod "arm64 +dotprod" 1
run "arm64 baseline kernels (-cpu max)" arm max "$WORK/arm-base-kernels"
expect_dotprod "arm64 baseline on max" 1
run "arm64 baseline kernels (-cpu cortex-a72)" arm cortex-a72 "$WORK/arm-base-kernels"
expect_dotprod "arm64 baseline on cortex-a72" 0
# The fallback run above means something only if that CPU model really lacks sdot.
if (ulimit -c 0 && arm cortex-a72 "$WORK/arm-dotprod-kernels") >/dev/null 2>&1; then
    fail "a +dotprod build ran on qemu's cortex-a72: it does not model a CPU without dotprod"
fi

core_hash "x86_64 openmp" "$WORK/x86-core"
core_hash "x86_64 gcd (pthread stand-in)" "$WORK/x86-gcd-core"
core_hash "arm64 +dotprod (-cpu max)" arm max "$WORK/arm-dotprod-core"
core_hash "arm64 baseline (-cpu max)" arm max "$WORK/arm-base-core"
core_hash "arm64 baseline (-cpu cortex-a72)" arm cortex-a72 "$WORK/arm-base-core"

echo "=== core hashes"
reference=${hashes["x86_64 openmp"]}
for label in "${!hashes[@]}"; do
    printf '%-36s %s\n' "$label" "${hashes[$label]}"
    [[ ${hashes[$label]} == "$reference" ]] || fail "$label core hash ${hashes[$label]} != x86_64 $reference"
done

if ((failures)); then
    echo "$failures check(s) failed" >&2
    exit 1
fi
echo "all kernels equal scalar; core hash $reference on x86_64 and arm64"
