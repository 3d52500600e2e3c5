"""The command line end to end, through real subprocesses: train, sample, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import run_cli
from mlm.egg.config import preset


def assert_one_line_error(result, *needles: str) -> None:
    err = result.stderr.decode()
    assert result.returncode != 0
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in err, err


def test_train_then_sample_is_deterministic(workdir: Path) -> None:
    run_cli("train", "--preset", "tiny", "--steps", "20", "--save-every", "10", "--run-dir", "R", cwd=workdir,
            check=True)
    run_dir = workdir / "R"
    assert (run_dir / "egg.ckpt.best").exists()
    assert (run_dir / "egg.ckpt.0").exists() and (run_dir / "egg.ckpt.1").exists()
    args = ("sample", "--run-dir", "R", "--ckpt", "best", "--length", "80", "--seed", "1")
    first = run_cli(*args, cwd=workdir, check=True).stdout
    second = run_cli(*args, cwd=workdir, check=True).stdout
    assert first == second
    assert len(first) == 81  # 80 bytes and a newline
    other_seed = run_cli("sample", "--run-dir", "R", "--ckpt", "best", "--length", "80", "--seed", "2",
                         cwd=workdir, check=True).stdout
    assert other_seed != first


def test_train_prints_progress_and_uses_bundled_corpus(tmp_path: Path) -> None:
    result = run_cli("train", "--preset", "tiny", "--steps", "10", "--print-every", "5", "--sample-every", "10",
                     "--run-dir", "R", cwd=tmp_path, check=True)
    out = result.stdout.decode()
    assert "bundled" in out
    assert "step 5 | loss" in out and "step 10 | loss" in out and "pop-tok/s" in out
    assert "sample step 10:" in out

def test_progress_and_samples_follow_the_clock_by_default(tmp_path: Path) -> None:
    """Hundreds of fast steps print a handful of lines, not one per few steps (PROGRESS_SECONDS, SAMPLE_SECONDS)."""
    result = run_cli("train", "--preset", "tiny", "--steps", "300", "--run-dir", "R", cwd=tmp_path, check=True)
    out = result.stdout.decode()
    progress = [line for line in out.splitlines() if re.search(r"step \d+ \| loss", line)]
    assert progress and "step 1 | loss" in progress[0]
    assert len(progress) <= 4, out  # the first step, then one per 10 s: this run takes a few seconds
    assert "sample step" not in out  # the first sample is due after 60 s


def test_sample_options_change_output(workdir: Path) -> None:
    run_cli("train", "--preset", "tiny", "--steps", "10", "--run-dir", "R", cwd=workdir, check=True)

    def sample(*extra: str) -> bytes:
        return run_cli("sample", "--run-dir", "R", "--length", "60", "--seed", "3", *extra,
                       cwd=workdir, check=True).stdout

    base = sample()
    greedy = sample("--temperature", "0")
    assert greedy == sample("--temperature", "0", "--seed", "99"), "greedy sampling ignores the seed"
    assert sample("--top-k", "1") == greedy, "top-k 1 is greedy"
    assert base != greedy
    (workdir / "prompt.txt").write_bytes(b"const a = ")
    assert sample("--prompt-file", "prompt.txt") == sample("--prompt", "const a = ")
    assert sample("--prompt", "const a = ") != base
    stop_char = next(chr(b) for b in base[:-1] if 33 <= b < 127)
    stopped = sample("--stop", stop_char)
    assert stopped == base[: base.index(stop_char.encode()) + 1] + b"\n"


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("train", "--data", "missing.txt"), ("missing.txt",)),
        (("train", "--preset", "huge"), ("huge",)),
        (("train", "--preset", "tiny", "--hidden", "40"), ("--hidden", "multiple of 16")),
        (("train", "--preset", "tiny", "--population", "7"), ("--population", "even")),
        (("train", "--preset", "tiny", "--population", "0"), ("--population",)),
        (("train", "--preset", "tiny", "--threads", "0"), ("--threads",)),
        (("sample", "--run-dir", "nothing-here"), ("no checkpoint", "train")),
        (("sample", "--run-dir", "nothing-here", "--ckpt", "nope.ckpt"), ("nope.ckpt",)),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: tuple[str, ...], needles: tuple[str, ...]) -> None:
    assert_one_line_error(run_cli(*args, cwd=tmp_path), *needles)


def test_data_shorter_than_a_window(tmp_path: Path) -> None:
    (tmp_path / "input.txt").write_bytes(b"x = 1;\n" * 3)
    result = run_cli("train", "--preset", "tiny", "--steps", "2", cwd=tmp_path)
    assert_one_line_error(result, "window", "--seq-len")


def test_help_explains_commands(tmp_path: Path) -> None:
    out = run_cli("--help", cwd=tmp_path, check=True).stdout.decode()
    for command in ("train", "sample", "eval", "ckpt", "export", "info"):
        assert command in out
    train_help = run_cli("train", "--help", cwd=tmp_path, check=True).stdout.decode()
    assert "--time-budget" in train_help and "--resume" in train_help


def test_ckpt_show_json_and_export(workdir: Path) -> None:
    run_cli("train", "--preset", "tiny", "--steps", "10", "--run-dir", "R", cwd=workdir, check=True)
    shown = json.loads(run_cli("ckpt", "show", "R/egg.ckpt.0", "--json", cwd=workdir, check=True).stdout)
    assert shown["step"] == 10 and len(shown["weights_sha256"]) == 64
    listing = json.loads(run_cli("ckpt", "list", "--run-dir", "R", "--json", cwd=workdir, check=True).stdout)
    assert [r["name"] for r in listing if r["valid"]] == ["egg.ckpt.0", "egg.ckpt.best"]
    run_cli("export", "--run-dir", "R", "--ckpt", "best", "w.npz", cwd=workdir, check=True)
    import numpy as np

    with np.load(workdir / "w.npz") as npz:
        assert npz["embedding"].shape == (256, 32)
        assert npz["head"].shape == (256, 32)


def test_ckpt_list_names_the_step_each_val_bpb_scored(workdir: Path) -> None:
    """Files are saved more often than the run evaluates: a file's val_bpb belongs to an older step, and
    ckpt list says which, also for files a resumed run writes."""
    run_cli("train", "--preset", "tiny", "--steps", "12", "--eval-every", "5", "--save-every", "4",
            "--run-dir", "R", cwd=workdir, check=True)
    run_cli("train", "--preset", "tiny", "--steps", "13", "--eval-every", "5", "--save-every", "1",
            "--run-dir", "R", cwd=workdir, check=True)
    listing = json.loads(run_cli("ckpt", "list", "--run-dir", "R", "--json", cwd=workdir, check=True).stdout)
    scored = {(r["step"], r["val_step"]) for r in listing if r["valid"] and r["name"] != "egg.ckpt.best"}
    # An evaluation (steps 5, 10 and each run's end) writes a file of its own; the files between carry the
    # last one, and the resumed run carried step 12's over from the checkpoint it resumed.
    assert {(5, 5), (8, 5), (10, 10), (12, 10), (12, 12), (13, 12), (13, 13)} <= scored
    lines = run_cli("ckpt", "list", "--run-dir", "R", cwd=workdir, check=True).stdout.decode().splitlines()
    assert "(step 5)" in next(line for line in lines if "step       8" in line)
    assert "(step" not in next(line for line in lines if "step      10" in line)


def test_sample_on_a_terminal_escapes_control_bytes_and_raw_does_not(workdir: Path) -> None:
    """On a TTY non-printable bytes are shown as \\xNN; --raw writes them as they are."""
    import os
    import pty
    import subprocess
    import sys

    from conftest import cli_env

    run_cli("train", "--preset", "tiny", "--steps", "5", "--run-dir", "R", cwd=workdir, check=True)

    def on_terminal(*extra: str) -> bytes:
        leader, follower = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "mlm.egg", "sample", "--run-dir", "R", "--length", "200",
                                 "--seed", "4", *extra], cwd=workdir, env=cli_env(), stdout=follower,
                                stderr=subprocess.PIPE)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=60)
        os.close(leader)
        return b"".join(chunks)

    piped = run_cli("sample", "--run-dir", "R", "--length", "200", "--seed", "4", cwd=workdir, check=True).stdout
    assert any(b < 32 and b not in (9, 10, 13) for b in piped), "an untrained model should emit control bytes"
    shown = on_terminal()
    assert b"\\x" in shown
    assert not any(b < 32 and b not in (9, 10, 13) for b in shown)
    raw = on_terminal("--raw")
    assert any(b < 32 and b not in (9, 10, 13) for b in raw)


def test_runs_from_inside_the_source_checkout() -> None:
    """README: `pip install . && python -m mlm.egg train` is typed in the checkout, where ./mlm shadows the
    installed package; the installed compiled core must still be found."""
    checkout = Path(__file__).resolve().parents[1]
    result = run_cli("info", cwd=checkout, check=True)
    assert b"kernel" in result.stdout


@pytest.mark.parametrize(("population", "streams"), [(256, 128), (2048, 1024), (6, 3)])
def test_a_new_population_takes_the_windows_that_fit_it(tmp_path: Path, population: int, streams: int) -> None:
    """`small` has one window per pair: --population alone keeps that, where a fixed 512 would be refused."""
    result = run_cli("train", "--population", str(population), "--steps", "1", "--sample-every", "0",
                     "--run-dir", "r", cwd=tmp_path, check=True)
    config = json.loads(run_cli("ckpt", "show", "r/egg.ckpt.0", "--json", cwd=tmp_path, check=True).stdout)["config"]
    assert (config["population"], config["streams"]) == (population, streams), result.stdout
    assert preset("tiny").overridden(population=population).streams == min(8, population // 2)
