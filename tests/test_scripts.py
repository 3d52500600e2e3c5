"""The experiment scripts behind docs/results.md, run as a user runs them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import cli_env, run_cli

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(SCRIPTS / name), *args], cwd=cwd, env=cli_env(),
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    return result


def test_fixed_steps_is_reproducible_and_reports_each_evaluation(workdir: Path) -> None:
    args = ("--data", "input.txt", "--preset", "tiny", "--steps", "6", "--eval-every", "3",
            "--val-bytes", "3000", "--set", "streams=16")
    first = run_script("fixed_steps.py", *args, cwd=workdir).stdout
    again = run_script("fixed_steps.py", *args, "--threads", "2", cwd=workdir).stdout
    curve = re.findall(r"^step (\d+) \| val_bpb ([0-9.]+)", first, re.M)
    assert [int(step) for step, _ in curve] == [3, 6]
    assert curve == re.findall(r"^step (\d+) \| val_bpb ([0-9.]+)", again, re.M), "threads must not change results"
    assert all(0 < float(bpb) < 9 for _, bpb in curve)
    assert f'RESULT {{"streams": 16}} final {curve[-1][1]}' in first


def test_fixed_steps_hold_out_trains_without_the_slice_and_scores_it(workdir: Path) -> None:
    args = ("--data", "input.txt", "--preset", "tiny", "--steps", "4", "--eval-every", "2", "--val-bytes", "3000",
            "--set", "streams=16", "--score", "1000:2000", "--score", "3000:2000")
    full = run_script("fixed_steps.py", *args, cwd=workdir).stdout
    held = run_script("fixed_steps.py", *args, "--hold-out", "1000:2000", cwd=workdir).stdout
    pattern = re.compile(r"^step (\d+) \| train\[(\d+):\+2000\] (held out|seen) \| bpb ([0-9.]+)", re.M)
    assert [(int(s), int(a), kind) for s, a, kind, _ in pattern.findall(held)] == [
        (2, 1000, "held out"), (2, 3000, "seen"), (4, 1000, "held out"), (4, 3000, "seen")]
    assert [kind for _, _, kind, _ in pattern.findall(full)] == ["seen"] * 4
    assert all(0 < float(bpb) < 9 for *_, bpb in pattern.findall(held))
    val_curve = re.compile(r"^step \d+ \| val_bpb ([0-9.]+)", re.M)
    assert val_curve.findall(held) != val_curve.findall(full), "without the slice the model sees other windows"
    outside = subprocess.run([sys.executable, str(SCRIPTS / "fixed_steps.py"), *args, "--hold-out", "0:99999999"],
                             cwd=workdir, env=cli_env(), capture_output=True, text=True, timeout=60)
    assert outside.returncode != 0 and "must lie inside the" in outside.stderr


def test_fixed_steps_names_an_unknown_setting(workdir: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPTS / "fixed_steps.py"), "--set", "widht=3"],
                            cwd=workdir, env=cli_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "'widht' is not a ModelConfig field" in result.stderr


def test_vote_snr_measures_votes_without_moving_weights(workdir: Path) -> None:
    run_cli("train", "--preset", "tiny", "--steps", "20", "--save-every", "10", "--run-dir", "R", cwd=workdir,
            check=True)
    out = run_script("vote_snr.py", "R/egg.ckpt.1", "--data", "input.txt", "--steps", "8", cwd=workdir).stdout
    assert out.startswith("step 20, 8 steps of votes")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:]}
    assert {"embedding", "head", "all"} <= set(rows)
    weights, signal, noise, snr = (float(v) for v in rows["all"][:4])
    # Votes are in units of their spread under pure noise: real votes spread about that much.
    assert weights > 0 and 0.5 < noise < 1.5 and signal >= 0
    assert abs(snr - signal / noise) < 0.01
