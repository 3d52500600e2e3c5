"""cffi build of the C core, and the per-platform build plan.

``setup.py`` points ``cffi_modules`` at :func:`make_ffibuilder` (so importing this
module builds nothing). :func:`build_plan` is a pure function of (platform,
machine, compiler facts) so the choices for every platform are unit-tested
without that platform.
"""

# No `from __future__ import annotations`: cffi exec()s this file outside sys.modules, where
# dataclasses cannot resolve string annotations.
import os
import platform
import shutil
import subprocess
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
CORE_SOURCES = ["model.c", "forward.c", "es.c", "average.c", "rng.c", "error.c", "kernels.c", "kernels_scalar.c",
                "kernels_x86.c", "kernels_neon.c", "build_info.c", "bench.c"]
OPTIMISE = ["-O3", "-std=gnu11", "-fno-strict-aliasing"]


@dataclass(frozen=True)
class BuildPlan:
    """Sources and flags for one platform."""

    sources: list[str]
    compile_args: list[str] = field(default_factory=list)
    link_args: list[str] = field(default_factory=list)
    parallel: str = "serial"


def build_plan(system: str, machine: str, openmp_flags: list[str] | None) -> BuildPlan:
    """Choose the parallel loop and flags.

    ``system``/``machine`` as ``platform.system()``/``platform.machine()``;
    ``openmp_flags`` are the flags that made a probe program with OpenMP
    compile and link, or None when the compiler has no OpenMP.

    - macOS: Apple clang, Grand Central Dispatch, never OpenMP (Apple ships no
      OpenMP runtime). On arm64 the core targets the M1, whose NEON has dotprod.
    - Linux and the rest: OpenMP when the probe passed, else the serial loop.
      No architecture flags, so a build (a wheel) runs on every CPU of its
      architecture: the x86 kernels use target attributes and a CPUID check,
      and on aarch64 GCC builds the NEON kernels twice, picking sdot at load
      time when the CPU has dotprod (csrc/kernels_neon.c).
    """
    args = list(OPTIMISE)
    if system == "Darwin":
        if machine == "arm64":
            # -Xarch_arm64: a universal2 Python also compiles an x86_64 slice, which
            # must not see an arm64 -mcpu.
            args += ["-Xarch_arm64", "-mcpu=apple-m1"]
        return BuildPlan(CORE_SOURCES + ["parallel_gcd.c"], args, [], "gcd")
    if openmp_flags:
        return BuildPlan(CORE_SOURCES + ["parallel_openmp.c"], args + openmp_flags, openmp_flags, "openmp")
    return BuildPlan(CORE_SOURCES + ["parallel_serial.c"], args, [], "serial")


def compiler_command() -> list[str]:
    """The C compiler setuptools will use (``CC`` overrides, as in distutils)."""
    return (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()


def compiler_works(cc: list[str]) -> bool:
    """True when ``cc`` runs: on a Mac without the Command Line Tools, /usr/bin/cc is a stub
    that exists but fails."""
    if not shutil.which(cc[0]):
        return False
    return subprocess.run([*cc, "--version"], capture_output=True).returncode == 0


def probe_openmp(cc: list[str]) -> list[str] | None:
    """Return ['-fopenmp'] when the compiler builds and links an OpenMP program."""
    if not shutil.which(cc[0]):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        result = subprocess.run([*cc, "-fopenmp", str(src), "-o", str(Path(tmp) / "probe")],
                                capture_output=True)
    return ["-fopenmp"] if result.returncode == 0 else None


def missing_compiler_message(system: str) -> str:
    """What to do when there is no working C compiler, for pip's error output."""
    if system == "Darwin":
        return "no C compiler found: run `xcode-select --install`, then `pip install .` again"
    return "no C compiler found: install gcc or clang (e.g. `apt-get install build-essential`), then retry"


def cdef_from_header(text: str) -> str:
    """egg.h without preprocessor lines: the declarations cffi parses."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def make_ffibuilder() -> FFI:
    """The cffi builder for this machine (``cffi_modules`` calls it at build time)."""
    system, machine = platform.system(), platform.machine()
    cc = compiler_command()
    if not compiler_works(cc):
        raise SystemExit(missing_compiler_message(system))
    plan = build_plan(system, machine, None if system == "Darwin" else probe_openmp(cc))
    ffi = FFI()
    ffi.cdef(cdef_from_header((CSRC / "egg.h").read_text()))
    ffi.set_source(
        "mlm.egg._core",
        '#include "egg.h"',
        sources=[str((CSRC / s).relative_to(ROOT)) for s in plan.sources],
        include_dirs=[str(CSRC.relative_to(ROOT))],
        extra_compile_args=plan.compile_args,
        extra_link_args=plan.link_args,
    )
    return ffi


if __name__ == "__main__":
    make_ffibuilder().compile(verbose=True)
