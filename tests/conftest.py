"""Shared fixtures: small configurations, corpora and a CLI runner that uses real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlm.env import KERNEL, RESUME_BEST, RESUME_BEST_ALIAS

#: A fixed git identity and no user configuration, so fixture commits work on a fresh CI machine.
GIT_IDENTITY = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}

REPETITIVE_LINES = (
    b"const a = new Vector3( 1, 2, 3 );\n",
    b"function add( a, b ) { return a + b; }\n",
    b"this.x = x; this.y = y;\n",
)


def repetitive_corpus(n_lines: int = 3000, seed: int = 0) -> bytes:
    """Short JS-like lines in random order: after a line's first bytes the rest is determined."""
    rng = np.random.default_rng(seed)
    return b"".join(REPETITIVE_LINES[i] for i in rng.integers(0, len(REPETITIVE_LINES), n_lines))


def headered_corpus(n_files: int = 40, seed: int = 0) -> bytes:
    """A small corpus in the harvested format: each file preceded by its header line."""
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(n_files):
        body = b"".join(REPETITIVE_LINES[j] for j in rng.integers(0, len(REPETITIVE_LINES), 30))
        parts.append(b"// === FILE: src/file%03d.js ===\n" % i + body + b"\n")
    return b"".join(parts)


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: this checkout importable, no colour, plus ``extra``."""
    env = dict(os.environ)
    for name in (RESUME_BEST, RESUME_BEST_ALIAS, KERNEL):
        env.pop(name, None)
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240,
            check: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m mlm.egg ARGS`` in ``cwd`` and capture its output as bytes."""
    result = subprocess.run([sys.executable, "-m", "mlm.egg", *args], cwd=cwd, env=env or cli_env(),
                            capture_output=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout:\n{result.stdout.decode(errors='replace')}\n"
                             f"stderr:\n{result.stderr.decode(errors='replace')}")
    return result


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A temporary working directory with a small headered corpus as input.txt."""
    (tmp_path / "input.txt").write_bytes(headered_corpus())
    return tmp_path
