"""The C test programs (tests/c) built with this machine's compiler and run; a parallel task's error reaching Python.

The programs are built by tests/c/build.sh, the same build scripts/test_arm64.sh uses for its native and
cross-compiled runs, so the native half of that check runs wherever there is a C compiler.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import cli_env
from mlm.egg._build import compiler_works, probe_openmp
from mlm.egg.engine import parallel_backend

ROOT = Path(__file__).resolve().parents[1]
TESTS_C = ROOT / "tests" / "c"


def system_compiler() -> str | None:
    """$CC, else gcc, else clang: the first that runs."""
    for cc in (os.environ.get("CC"), "gcc", "clang"):
        if cc and compiler_works([cc]):
            return cc
    return None


CC = system_compiler()
needs_cc = pytest.mark.skipif(CC is None, reason="needs a C compiler (gcc or clang)")
#: The native builds of scripts/test_arm64.sh: OpenMP (when this compiler has it) and the GCD loop on
#: the pthread stand-in for libdispatch.
LOOPS = ["gcd"] + (["openmp"] if CC and probe_openmp([CC]) else [])


def expected_core_hash() -> str:
    """The hash test_core.c requires of every build (its EXPECTED_CORE_HASH)."""
    source = (TESTS_C / "test_core.c").read_text()
    return re.search(r"#define EXPECTED_CORE_HASH 0x([0-9a-f]{16})ULL", source).group(1)


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_kernels and test_core for each loop in LOOPS, as LOOP-kernels and LOOP-core (built concurrently)."""
    out = tmp_path_factory.mktemp("native_c")

    def build(loop: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(TESTS_C / "build.sh"), str(out), CC, loop], cwd=ROOT,
                              capture_output=True, text=True, timeout=240)

    with ThreadPoolExecutor(len(LOOPS)) as pool:
        for result in pool.map(build, LOOPS):
            assert result.returncode == 0, result.stderr
    return out


@needs_cc
@pytest.mark.parametrize("loop", LOOPS)
def test_every_kernel_equals_scalar(programs: Path, loop: str) -> None:
    result = subprocess.run([str(programs / f"{loop}-kernels")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    kernels = re.search(r"^available kernels: (.+)$", result.stdout, re.M).group(1).split(",")
    assert "scalar" in kernels
    for name in kernels:
        assert re.search(rf"^kernel {name} +\d+ gemm shapes, \d+ dot lengths: equal to scalar$", result.stdout,
                         re.M), result.stdout


@needs_cc
@pytest.mark.parametrize("loop", LOOPS)
def test_core_hash_is_the_expected_one_for_every_kernel_thread_count_and_schedule(programs: Path, loop: str) -> None:
    result = subprocess.run([str(programs / f"{loop}-core")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"parallel {loop}," in result.stdout
    runs = re.findall(r"^kernel \S+ +threads \d batched \d split \d: ([0-9a-f]{16})$", result.stdout, re.M)
    assert len(runs) >= 8  # at least the scalar kernel on 1 and 3 threads, batched and not, whole and split
    assert set(runs) == {expected_core_hash()}
    assert re.search(r"^core hash: ([0-9a-f]{16})$", result.stdout, re.M).group(1) == expected_core_hash()


#: A Python process that loads the installed core with its symbols global, then test_core built as a
#: shared library (its egg_* calls left to the loader), and runs test_core's main on that core.
ON_INSTALLED_CORE = """
import ctypes, os, sys
sys.setdlopenflags(os.RTLD_NOW | os.RTLD_GLOBAL)
from mlm.egg import engine
print("installed core:", engine._core_module.__file__, flush=True)
sys.exit(ctypes.CDLL(sys.argv[1]).main())
"""


@needs_cc
@pytest.mark.skipif(platform.system() != "Linux", reason="links test_core against the loaded core the ELF way")
def test_core_hash_of_the_installed_python_core_is_the_expected_one(tmp_path: Path) -> None:
    library = tmp_path / "test_core.so"
    subprocess.run([CC, "-std=gnu11", "-O2", f"-I{ROOT / 'csrc'}", "-fPIC", "-shared", "-o", str(library),
                    str(TESTS_C / "test_core.c")], check=True, capture_output=True)
    result = subprocess.run([sys.executable, "-c", ON_INSTALLED_CORE, str(library)], env=cli_env(),
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^installed core: .*_core\..*\.so$", result.stdout, re.M)
    assert re.search(r"^core hash: ([0-9a-f]{16})$", result.stdout, re.M).group(1) == expected_core_hash()


#: A Python process that trains and evaluates until a parallel task fails, and prints what the C core said.
WORKER_FAILURE = """
import numpy as np
from mlm.egg.config import ModelConfig
from mlm.egg.engine import CoreError, Engine

config = ModelConfig(hidden=256, layers=1, mlp_ratio=4, seq_len=16, population=64, streams=4)
engine = Engine(config, threads=1, batched=False)
engine.init_weights(1)
windows = np.arange(4 * 17, dtype=np.uint8).reshape(4, 17)
text = bytes(range(256)) * 8
# On one thread every task runs on the main thread, where allocations succeed.
engine.train_step(7, 0, windows)
engine.eval_bits(text, 16)
print("one thread: ok")
# One task per member or chunk, so the worker threads get some of them (retried, in case they got none).
engine.threads = 4
for name, call in [("train_step", lambda: engine.train_step(7, 1, windows)),
                   ("eval", lambda: engine.eval_bits(text, 16))]:
    for attempt in range(50):
        try:
            call()
        except CoreError as error:
            print(f"{name}: {error}")
            break
    else:
        print(f"{name}: no task ever failed")
"""


@needs_cc
@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="the malloc hook is for glibc")
def test_an_error_inside_a_parallel_task_reaches_python(tmp_path: Path) -> None:
    if parallel_backend() == "serial":
        pytest.skip("the installed core runs every task on the calling thread")
    hook = tmp_path / "fail_worker_malloc.so"
    subprocess.run([CC, "-O2", "-shared", "-fPIC", "-o", str(hook), str(TESTS_C / "fail_worker_malloc.c")],
                   check=True, capture_output=True)
    # 4 KiB and up: the forward workspace, never the 256-byte thread-local error buffer or libgomp's bookkeeping.
    env = cli_env(LD_PRELOAD=str(hook), FAIL_WORKER_MALLOC_BYTES="4096", OPENBLAS_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", WORKER_FAILURE], env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "one thread: ok",
        "train_step: out of memory in the forward pass",
        "eval: out of memory in the forward pass",
    ]

