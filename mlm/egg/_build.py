"""cffi build of the C core, and the per-platform build plan.

``setup.py`` points ``cffi_modules`` here. :func:`build_plan` is a pure
function of (platform, machine, compiler facts) so the choices for every
platform are unit-tested without that platform.
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
CORE_SOURCES = ["model.c", "forward.c", "es.c", "kernels.c", "kernels_scalar.c", "kernels_x86.c", "kernels_neon.c"]
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
    """
    args = list(OPTIMISE)
    if system == "Darwin":
        if machine == "arm64":
            # Every Apple M-series core has NEON with dotprod.
            args.append("-mcpu=apple-m1")
        # GCD is the parallel loop on macOS: no OpenMP runtime to install.
        return BuildPlan(CORE_SOURCES + ["parallel_gcd.c"], args, [], "gcd")
    if openmp_flags:
        return BuildPlan(CORE_SOURCES + ["parallel_openmp.c"], args + openmp_flags, openmp_flags, "openmp")
    return BuildPlan(CORE_SOURCES + ["parallel_serial.c"], args, [], "serial")


def compiler_command() -> list[str]:
    """The C compiler setuptools will use (``CC`` overrides, as in distutils)."""
    return (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()


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
    if system == "Darwin":
        return "no C compiler found: run `xcode-select --install`, then `pip install .` again"
    return "no C compiler found: install gcc or clang (e.g. `apt-get install build-essential`), then retry"


def cdef_from_header(text: str) -> str:
    """egg.h without preprocessor lines: the declarations cffi parses."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def make_ffibuilder() -> FFI:
    system, machine = platform.system(), platform.machine()
    cc = compiler_command()
    if not shutil.which(cc[0]):
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
else:
    ffibuilder = make_ffibuilder()
