# The C test programs' build, one definition for scripts/test_arm64.sh (which sources this file for
# its cross and native builds) and tests/test_native_c.py (which runs it):
#   bash tests/c/build.sh OUT_DIR CC LOOP...   builds OUT_DIR/LOOP-kernels and OUT_DIR/LOOP-core
# with the compiler CC for each parallel LOOP (openmp, gcd or serial), from the repository root.

# The core as the extension builds it, minus the parallel loop each build picks for itself.
CORE=()
for source in csrc/*.c; do
    [[ $source == csrc/parallel_* ]] || CORE+=("$source")
done
COMMON=(-std=gnu11 -O2 -Wall -Wextra -fno-strict-aliasing -Icsrc)

# loop_flags LOOP: the flags and source of one parallel loop, in LOOP_FLAGS and LOOP_SOURCE. The GCD
# loop runs on a pthread stand-in for libdispatch off macOS (tests/c/fake_dispatch).
loop_flags() {
    LOOP_SOURCE=csrc/parallel_$1.c
    case $1 in
        openmp) LOOP_FLAGS=(-fopenmp) ;;
        gcd) LOOP_FLAGS=(-pthread -Itests/c/fake_dispatch) ;;
        serial) LOOP_FLAGS=() ;;
        *) echo "unknown parallel loop '$1': openmp, gcd or serial" >&2; return 1 ;;
    esac
}

# build OUT_DIR NAME CC LOOP FLAGS...: test_kernels and test_core as OUT_DIR/NAME-kernels and
# OUT_DIR/NAME-core, with CC, the parallel loop LOOP and any further FLAGS. Each core source is
# compiled once, for both programs.
build() {
    local out=$1 name=$2 cc=$3 loop=$4
    shift 4
    loop_flags "$loop"
    local flags=("${COMMON[@]}" "$@" "${LOOP_FLAGS[@]}") objects=() source object
    for source in "${CORE[@]}" "$LOOP_SOURCE"; do
        object=$out/$name-$(basename "${source%.c}").o
        "$cc" "${flags[@]}" -c "$source" -o "$object"
        objects+=("$object")
    done
    for program in kernels core; do
        "$cc" "${flags[@]}" -o "$out/$name-$program" "tests/c/test_$program.c" "${objects[@]}"
    done
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    if (($# < 3)); then
        echo "usage: bash tests/c/build.sh OUT_DIR CC LOOP..." >&2
        exit 2
    fi
    out=$1 cc=$2
    shift 2
    for loop in "$@"; do
        build "$out" "$loop" "$cc" "$loop"
    done
fi
