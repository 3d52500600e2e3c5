#!/usr/bin/env python3
"""Prove the macOS build without a Mac: the C core as mlm/egg/_build.py plans it for Darwin.

    pip install ziglang && python scripts/check_macos_build.py

For Darwin arm64 and Darwin x86_64, compiles every source of ``build_plan()`` with exactly its
compile flags plus -Wall -Wextra -Werror, using zig's clang and the macOS headers the ``ziglang``
wheel ships (<dispatch/dispatch.h> included), and links the objects into a dylib against its macOS
stubs. Then checks that the arm64 NEON kernels multiply with sdot: zig ships no disassembler, so
the kernel file is compiled once more, with the same plan flags, to an assembly listing. Prints
each command. Exit status 0 when both targets build and link cleanly and sdot is there, 1 if not.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from mlm.egg._build import build_plan

CSRC = Path(__file__).resolve().parents[1] / "csrc"
ZIG_CC = [sys.executable, "-m", "ziglang", "cc"]
STRICT = ["-Wall", "-Wextra", "-Werror"]
#: platform.machine() on a Mac -> zig's target.
TARGETS = {"arm64": "aarch64-macos", "x86_64": "x86_64-macos"}
#: The first bytes of a 64-bit Mach-O file (MH_MAGIC_64, then the CPU type), little-endian.
MACHO_HEADERS = {"arm64": bytes.fromhex("cffaedfe" "0c000001"), "x86_64": bytes.fromhex("cffaedfe" "07000001")}
NEON_KERNELS = "kernels_neon.c"
#: An sdot instruction in clang's assembly: `sdot v0.4s, ...`, or Apple's `sdot.4s v0, ...`.
SDOT = re.compile(r"\s+sdot(\.\w+)?\s")


def run(command: list[str]) -> None:
    """Show ``command``, run it, and stop with its output when it fails or warns."""
    print("$", shlex.join(command), flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"FAIL: exit status {result.returncode}\n{result.stdout}{result.stderr}")


def build_dylib(machine: str, out: Path) -> Path:
    """Compile the plan's sources for ``machine`` with its flags and -Werror, link them; the dylib's path."""
    plan = build_plan("Darwin", machine, None)
    target = ["-target", TARGETS[machine]]
    objects = []
    for source in plan.sources:
        obj = out / f"{machine}-{Path(source).stem}.o"
        run([*ZIG_CC, *target, *plan.compile_args, *STRICT, f"-I{CSRC}", "-c", str(CSRC / source), "-o", str(obj)])
        objects.append(str(obj))
    dylib = out / f"libegg-{machine}.dylib"
    run([*ZIG_CC, *target, "-shared", *plan.link_args, "-o", str(dylib), *objects])
    header = dylib.read_bytes()[:8]
    if header != MACHO_HEADERS[machine]:
        raise SystemExit(f"FAIL: {dylib.name} is not a 64-bit Mach-O {machine} library (header {header.hex()})")
    print(f"{machine}: {len(objects)} sources compiled without a warning, linked {dylib.name} (Mach-O {machine})")
    return dylib


def count_sdot(out: Path) -> int:
    """sdot instructions in the arm64 NEON kernels compiled with the plan's flags.

    Not -Werror here: zig passes -c along with -S, and clang warns that it is unused.
    """
    plan = build_plan("Darwin", "arm64", None)
    listing = out / "kernels_neon-arm64.s"
    run([*ZIG_CC, "-target", TARGETS["arm64"], *plan.compile_args, f"-I{CSRC}", "-S", str(CSRC / NEON_KERNELS),
         "-o", str(listing)])
    found = [line.strip() for line in listing.read_text().splitlines() if SDOT.match(line)]
    if found:
        print(f"arm64: {len(found)} sdot instructions in {NEON_KERNELS}, e.g. {found[0]!r}")
    return len(found)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for machine in TARGETS:
            build_dylib(machine, out)
        if count_sdot(out) == 0:
            print(f"FAIL: no sdot in {NEON_KERNELS} for arm64: the M1 build would miss its dot-product kernel")
            return 1
    print("macOS arm64 and x86_64 build cleanly; the arm64 kernels use sdot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
