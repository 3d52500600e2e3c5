"""Evaluation, results.tsv, training.log and terminal output, through real runs."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import GIT_IDENTITY, cli_env, headered_corpus, run_cli
from mlm.egg import reference as ref
from mlm.egg.checkpoint import read_checkpoint
from mlm.egg.config import ModelConfig
from mlm.egg.evaluate import EVAL_CHUNK
from mlm.egg.logbook import RESULTS_COLUMNS, compact_config


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_IDENTITY}).stdout.strip()


@pytest.fixture
def repo(workdir: Path) -> Path:
    """A git repository with one commit; results.tsv and the run dir are untracked."""
    git(workdir, "init", "-q")
    (workdir / "train.cfg").write_text("v1\n")
    git(workdir, "add", "train.cfg")
    git(workdir, "commit", "-qm", "first")
    return workdir


def rows(path: Path) -> list[dict[str, str]]:
    lines = path.read_text().splitlines()
    assert tuple(lines[0].split("\t")) == RESULTS_COLUMNS
    return [dict(zip(RESULTS_COLUMNS, line.split("\t"), strict=True)) for line in lines[1:]]


def test_results_rows_carry_the_commit_clean_and_dirty(repo: Path) -> None:
    run_cli("train", "--preset", "tiny", "--steps", "30", "--eval-every", "10", "--note", "smoke", "--run-dir", "R",
            cwd=repo, check=True)
    head = git(repo, "rev-parse", "--short", "HEAD")
    first = rows(repo / "results.tsv")[0]
    assert first["commit"] == head
    assert first["status"] == "ok" and first["steps"] == "30" and first["description"] == "smoke"
    assert 0 < float(first["val_bpb"]) < 20 and float(first["memory_mb"]) > 0
    (repo / "train.cfg").write_text("v2\n")
    run_cli("eval", "--ckpt", "best", "--run-dir", "R", "--note", "tab\there\nnewline", cwd=repo, check=True)
    second = rows(repo / "results.tsv")[1]
    assert second["commit"] == head + "+dirty"
    assert second["description"] == "tab here newline"


def test_outside_a_repository_commit_is_dash_and_interrupted_row(workdir: Path) -> None:
    proc = subprocess.Popen([os.sys.executable, "-m", "mlm.egg", "train", "--preset", "tiny", "--seq-len", "64",
                             "--steps", "100000", "--run-dir", "R", "--sample-every", "0", "--print-every", "10"],
                            cwd=workdir,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = workdir / "R" / "training.log"
    while not (log.exists() and "step 10 |" in log.read_text()):
        assert proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(2)
    assert proc.wait(timeout=60) == 130
    row = rows(workdir / "results.tsv")[0]
    assert row["commit"] == "-" and row["status"] == "interrupted"


def test_eval_matches_reference_and_thread_count(workdir: Path) -> None:
    run_cli("train", "--preset", "tiny", "--steps", "10", "--run-dir", "R", cwd=workdir, check=True)
    data = np.random.default_rng(0).integers(32, 127, 2 * EVAL_CHUNK + 77).astype(np.uint8)
    (workdir / "other.txt").write_bytes(data.tobytes())

    def val_bpb(threads: str) -> float:
        out = run_cli("eval", "--ckpt", "best", "--run-dir", "R", "--data", "other.txt", "--threads", threads,
                      "--json", cwd=workdir, check=True).stdout
        return json.loads(out)["val_bpb"]

    ckpt = read_checkpoint(workdir / "R" / "egg.ckpt.best")
    model = ref.Model(ckpt.config, ckpt.weights)
    total = 0
    for start in range(0, data.size - 1, EVAL_CHUNK):
        state = np.zeros((ckpt.config.layers, ckpt.config.hidden), dtype=np.int8)
        total += model.sequence_loss(data[start : start + EVAL_CHUNK + 1], state)
    expected = total / 65536 / (data.size - 1)
    assert val_bpb("1") == pytest.approx(expected, abs=1e-12)
    assert val_bpb("2") == val_bpb("1")
    plain = run_cli("eval", "--ckpt", "best", "--run-dir", "R", "--data", "other.txt", cwd=workdir, check=True)
    assert plain.stdout.decode().startswith("val_bpb: ")


def test_eval_defaults_to_the_runs_validation_split(workdir: Path) -> None:
    (workdir / "input.txt").write_bytes(headered_corpus(n_files=120))
    run_cli("train", "--preset", "tiny", "--steps", "10", "--run-dir", "R", cwd=workdir, check=True)
    out = json.loads(run_cli("eval", "--ckpt", "latest", "--run-dir", "R", "--json", cwd=workdir,
                             check=True).stdout)
    assert "validation split" in out["source"] and out["bytes"] > EVAL_CHUNK


@pytest.mark.parametrize(
    ("setup", "args", "needle"),
    [
        (lambda d: (d / "small.txt").write_bytes(b"x" * 100), ("--data", "small.txt"), "evaluation window"),
        (lambda d: (d / "results.tsv").write_text("a\tb\n"), ("--data", "input.txt"), "different header"),
        (lambda d: (d / "bad.ckpt").write_bytes(b"not a checkpoint at all"), ("--ckpt", "bad.ckpt"), "wrong magic"),
    ],
)
def test_eval_bad_input(workdir: Path, setup, args, needle) -> None:
    run_cli("train", "--preset", "tiny", "--steps", "5", "--run-dir", "R", "--results", "r.tsv", cwd=workdir,
            check=True)
    setup(workdir)
    result = run_cli("eval", "--run-dir", "R", *args, cwd=workdir)
    err = result.stderr.decode()
    assert result.returncode != 0 and needle in err and "Traceback" not in err


def test_training_log_across_a_resume_and_plain_output(workdir: Path) -> None:
    first = run_cli("train", "--preset", "tiny", "--steps", "20", "--sample-every", "10", "--run-dir", "R",
                    cwd=workdir, check=True)
    run_cli("train", "--preset", "tiny", "--steps", "30", "--eval-every", "10", "--run-dir", "R", cwd=workdir,
            check=True)
    log = (workdir / "R" / "training.log").read_text()
    assert log.count("=== start") == 2 and log.count("=== end: ok") == 2
    assert "resume from the latest valid slot at step 20" in log
    assert "sample step 10:" in log and "eval step 30 | val_bpb" in log
    assert "checkpoint step 30 -> egg.ckpt." in log
    assert b"\x1b" not in first.stdout, "non-TTY output must not contain control codes"
    quiet = run_cli("train", "--steps", "40", "--quiet", "--run-dir", "R", cwd=workdir, check=True)
    assert quiet.stdout == b""


def test_sampling_penalty_and_min_p_change_output(workdir: Path) -> None:
    run_cli("train", "--preset", "tiny", "--steps", "10", "--run-dir", "R", cwd=workdir, check=True)

    def sample(*extra: str) -> bytes:
        return run_cli("sample", "--run-dir", "R", "--length", "100", "--seed", "5", *extra, cwd=workdir,
                       check=True).stdout

    base = sample()
    assert sample("--presence-penalty", "4") != base
    assert sample("--min-p", "0.5") != base
    assert len(set(sample("--presence-penalty", "20", "--temperature", "0")[:-1])) > \
        len(set(sample("--temperature", "0")[:-1]))


def test_compact_config_tells_every_setting_apart() -> None:
    base = ModelConfig(noise_bits=2, fitness_levels=1)
    seen = {compact_config(base, 1)}
    for name, value in base.to_dict().items():
        changed = compact_config(base.replace(**{name: value + 1}), 1)
        assert changed not in seen, f"{name} does not show in the results.tsv config field"
        seen.add(changed)
    assert compact_config(base, 2) not in seen
