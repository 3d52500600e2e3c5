"""The macOS build proven without a Mac: scripts/check_macos_build.py with zig's clang and macOS headers."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_env
from mlm.egg._build import build_plan

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("ziglang") is None, reason="needs the ziglang wheel (pip install ziglang)")
@pytest.mark.timeout(600)
def test_macos_arm64_and_x86_64_compile_without_warnings_link_and_use_sdot() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_macos_build.py")], cwd=ROOT,
                            env=cli_env(), capture_output=True, text=True, timeout=590)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for machine, target in [("arm64", "aarch64-macos"), ("x86_64", "x86_64-macos")]:
        plan = build_plan("Darwin", machine, None)
        compiles = [line for line in result.stdout.splitlines() if f"-target {target} " in line and " -c " in line]
        # Every planned source, each with the plan's flags verbatim and warnings as errors.
        assert sorted(Path(line.split(" -c ")[1].split()[0]).name for line in compiles) == sorted(plan.sources)
        assert all(" ".join([*plan.compile_args, "-Wall", "-Wextra", "-Werror"]) in line for line in compiles)
        assert f"{machine}: {len(plan.sources)} sources compiled without a warning, linked libegg-{machine}.dylib" \
            in result.stdout
    sdot = re.search(r"^arm64: (\d+) sdot instructions in kernels_neon.c", result.stdout, re.M)
    assert sdot and int(sdot.group(1)) > 0
