"""The per-platform build plan (mlm/egg/_build.py), driven for platforms this machine is not."""

from __future__ import annotations

import platform
import shutil
import stat
from pathlib import Path

import pytest

from mlm.egg import _build
from mlm.egg._build import (
    CORE_SOURCES,
    build_plan,
    compiler_works,
    make_ffibuilder,
    missing_compiler_message,
    probe_openmp,
)

# The checkout's sources: _build.CSRC points into site-packages when the package is installed.
CSRC = Path(__file__).resolve().parents[1] / "csrc"
PARALLEL_FILES = {"parallel_gcd.c", "parallel_openmp.c", "parallel_serial.c"}


def parallel_file(sources: list[str]) -> str:
    (chosen,) = PARALLEL_FILES.intersection(sources)
    return chosen


def arch_flags(args: list[str]) -> list[str]:
    return [a for a in args if a.startswith(("-march", "-mcpu", "-Xarch"))]


def fake_compiler(tmp_path: Path, exit_status: int) -> str:
    """A `cc` that exists but exits with ``exit_status``, like /usr/bin/cc on a Mac without the tools."""
    path = tmp_path / "cc"
    path.write_text(f"#!/bin/sh\nexit {exit_status}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_every_plan_builds_the_whole_core_from_existing_files() -> None:
    for system, machine, openmp in [("Darwin", "arm64", None), ("Darwin", "x86_64", None),
                                    ("Linux", "x86_64", ["-fopenmp"]), ("Linux", "aarch64", None)]:
        plan = build_plan(system, machine, openmp)
        assert set(CORE_SOURCES) <= set(plan.sources)
        assert len(PARALLEL_FILES.intersection(plan.sources)) == 1
        assert all((CSRC / s).is_file() for s in plan.sources), plan.sources
        assert len(plan.sources) == len(set(plan.sources))


def test_macos_arm64_uses_gcd_and_m1_dotprod_never_openmp() -> None:
    # Even if a probe found OpenMP (a Homebrew libomp), macOS builds use GCD: nothing to install.
    plan = build_plan("Darwin", "arm64", ["-fopenmp"])
    assert plan.parallel == "gcd"
    assert parallel_file(plan.sources) == "parallel_gcd.c"
    assert not any("openmp" in a for a in plan.compile_args + plan.link_args)
    # -Xarch_arm64 keeps the flag away from the x86_64 half of a universal2 build.
    assert arch_flags(plan.compile_args) == ["-Xarch_arm64", "-mcpu=apple-m1"]
    assert "kernels_neon.c" in plan.sources


def test_macos_x86_64_uses_gcd_and_runtime_x86_kernels() -> None:
    plan = build_plan("Darwin", "x86_64", None)
    assert plan.parallel == "gcd"
    assert parallel_file(plan.sources) == "parallel_gcd.c"
    assert arch_flags(plan.compile_args) == []
    assert "kernels_x86.c" in plan.sources and "kernels_scalar.c" in plan.sources


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_linux_uses_openmp_when_the_probe_passed(machine: str) -> None:
    plan = build_plan("Linux", machine, ["-fopenmp"])
    assert plan.parallel == "openmp"
    assert parallel_file(plan.sources) == "parallel_openmp.c"
    assert "-fopenmp" in plan.compile_args and "-fopenmp" in plan.link_args
    # No architecture flags: the build runs on every CPU of the architecture and picks
    # AVX2 / sdot at run time.
    assert arch_flags(plan.compile_args) == []


@pytest.mark.parametrize("machine", ["x86_64", "aarch64", "riscv64"])
def test_compiler_without_openmp_gets_the_serial_loop(machine: str) -> None:
    plan = build_plan("Linux", machine, None)
    assert plan.parallel == "serial"
    assert parallel_file(plan.sources) == "parallel_serial.c"
    assert not any("openmp" in a for a in plan.compile_args + plan.link_args)


def test_missing_compiler_messages_say_what_to_install() -> None:
    assert "xcode-select --install" in missing_compiler_message("Darwin")
    assert "gcc" in missing_compiler_message("Linux")


def test_no_compiler_stops_the_build_with_that_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_build.platform, "system", lambda: "Darwin")
    for cc in ["/nonexistent/cc", fake_compiler(tmp_path, 1)]:
        monkeypatch.setenv("CC", cc)
        with pytest.raises(SystemExit, match="xcode-select --install"):
            make_ffibuilder()


def test_compiler_works_and_probe_on_broken_or_absent_compilers(tmp_path: Path) -> None:
    broken = fake_compiler(tmp_path, 1)
    assert not compiler_works([broken])
    assert not compiler_works(["/nonexistent/cc"])
    assert probe_openmp([broken]) is None
    assert probe_openmp(["/nonexistent/cc"]) is None


@pytest.mark.skipif(platform.system() == "Darwin" or shutil.which("gcc") is None,
                    reason="needs GNU gcc (on macOS `gcc` is Apple clang, which has no OpenMP)")
def test_probe_finds_openmp_in_the_real_gcc() -> None:
    assert compiler_works(["gcc"])
    assert probe_openmp(["gcc"]) == ["-fopenmp"]

