"""The NEON kernels and the x86/arm64 core hash, via scripts/test_arm64.sh (cross-compiler + qemu-user)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("aarch64-linux-gnu-gcc", "qemu-aarch64", "gcc")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
if not Path("/usr/aarch64-linux-gnu/include/stdio.h").exists():
    MISSING.append("libc6-dev-arm64-cross")


@pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} "
                    "(apt-get install gcc-aarch64-linux-gnu qemu-user libc6-dev-arm64-cross)")
@pytest.mark.timeout(600)
def test_arm64_kernels_and_core_hash_match_x86() -> None:
    result = subprocess.run(["bash", str(ROOT / "scripts" / "test_arm64.sh")], capture_output=True, text=True,
                            timeout=590)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "MISMATCH" not in result.stdout
    assert result.stdout.count("equal to scalar") >= 8  # 2 kernels x (x86 + three arm64 runs)
    assert result.stdout.count("elementwise cases: equal to scalar") >= 8  # the same, for the elementwise kernels
    assert "all kernels equal scalar; core hash" in result.stdout
