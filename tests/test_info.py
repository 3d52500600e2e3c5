"""`python -m mlm.egg info` and the scripts/train.sh launcher, as a user runs them."""

from __future__ import annotations

import os
import platform
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_env, run_cli
from mlm import __version__

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SH = ROOT / "scripts" / "train.sh"


def info_fields(stdout: bytes) -> dict[str, str]:
    """`key   value` lines (keys may contain one space) as a dict."""
    fields = {}
    for line in stdout.decode().splitlines():
        key, value = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        fields[key] = value
    return fields


def test_info_shows_build_and_machine_facts(tmp_path: Path) -> None:
    fields = info_fields(run_cli("info", cwd=tmp_path, check=True).stdout)
    assert fields["mlm"] == __version__
    assert fields["platform"] == f"{platform.system()} {platform.machine()}"
    assert re.search(r"gcc \d|clang|LLVM", fields["compiler"], re.IGNORECASE), fields["compiler"]
    available = fields["kernels available"].split(", ")
    assert "scalar" in available and fields["kernel"] in available
    assert int(fields["threads"]) >= 1
    assert fields["parallel"] in {"openmp", "gcd", "serial"}
    if platform.system() == "Darwin":
        assert fields["parallel"] == "gcd"
    if platform.machine() in {"arm64", "aarch64"}:
        assert "neon" in available and fields["neon dotprod"] in {"yes", "no"}
    else:
        assert "neon dotprod" not in fields
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        assert fields["kernel"] == "neon" and fields["neon dotprod"] == "yes"


def test_mlm_kernel_selects_the_kernel_shown(tmp_path: Path) -> None:
    fields = info_fields(run_cli("info", cwd=tmp_path, env=cli_env(MLM_KERNEL="scalar"), check=True).stdout)
    assert fields["kernel"] == "scalar"


# scripts/train.sh. PYTHON is a wrapper that answers the script's "which C extension would be
# imported" question from a file the test writes, records every call, stands in for the rebuild
# commands (pip install, _build.py) and runs everything else, `-m mlm.egg train` included, with
# the real interpreter: no test here compiles anything.

def fake_python(tmp_path: Path, pkg: str, core_mtime: float | None) -> tuple[Path, Path]:
    core = tmp_path / "_core.fake.so"
    if core_mtime is None:
        answer = f"{pkg}\n-\n"
    else:
        core.write_bytes(b"")
        os.utime(core, (core_mtime, core_mtime))
        answer = f"{pkg}\n{core}\n"
    (tmp_path / "spec.txt").write_text(answer)
    calls = tmp_path / "calls.txt"
    wrapper = tmp_path / "python"
    wrapper.write_text(f"""#!/bin/sh
echo "$*" >> '{calls}'
case "$1 $2" in
    "-c "*) cat '{tmp_path / "spec.txt"}'; exit 0 ;;
    "-m pip"|*/_build.py*) exit 0 ;;
esac
exec '{sys.executable}' "$@"
""")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper, calls


def train_sh(tmp_path: Path, wrapper: Path, *args: str) -> subprocess.CompletedProcess:
    env = cli_env(PYTHON=str(wrapper))
    return subprocess.run(["bash", str(TRAIN_SH), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


FUTURE = 4102444800.0  # 2100: newer than any csrc/ file


def test_train_sh_passes_arguments_through_and_appends_the_log(tmp_path: Path) -> None:
    wrapper, calls = fake_python(tmp_path, "/site-packages/mlm", FUTURE)
    for _ in range(2):
        result = train_sh(tmp_path, wrapper, "--help")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Usage:" in result.stdout and "--run-dir" in result.stdout
    log = (tmp_path / "training.log").read_text()
    assert log.count("Usage:") == 2
    assert log.count("-m mlm.egg train --help") == 2  # one header line per run
    assert "-m mlm.egg train --help" in calls.read_text()
    assert "pip" not in calls.read_text() and "_build.py" not in calls.read_text()


def test_train_sh_keeps_the_trainer_exit_status_and_logs_errors(tmp_path: Path) -> None:
    wrapper, _ = fake_python(tmp_path, "/site-packages/mlm", FUTURE)
    result = train_sh(tmp_path, wrapper, "--no-such-option")
    assert result.returncode == 2
    assert "--no-such-option" in (tmp_path / "training.log").read_text().split("\n", 1)[1]


@pytest.mark.parametrize(("pkg", "core_mtime", "rebuild"), [
    ("/site-packages/mlm", 0.0, f"-m pip install -q {ROOT}"),    # installed copy, older than csrc/
    ("/site-packages/mlm", None, f"-m pip install -q {ROOT}"),   # not built at all
    (str(ROOT / "mlm"), 0.0, "mlm/egg/_build.py"),              # this checkout: rebuild in place
])
def test_train_sh_rebuilds_a_stale_core(tmp_path: Path, pkg: str, core_mtime: float | None, rebuild: str) -> None:
    wrapper, calls = fake_python(tmp_path, pkg, core_mtime)
    result = train_sh(tmp_path, wrapper, "--help")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = calls.read_text().splitlines()
    assert rebuild in lines
    assert lines.index(rebuild) < lines.index("-m mlm.egg train --help")
    assert "rebuilding" in result.stdout or "pip install" in result.stdout
