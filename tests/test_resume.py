"""Crash, kill and resume with real processes and real signals: the resumed run is bit-exact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli_env, run_cli

STEPS = 30
#: A tiny model with enough work per step (~tens of ms) that signals land mid-run.
#: With a cooldown over the last steps and a ceiling above 16 spreads, so resumes cross the schedule's changes,
#: and the update-rule options on (weight decay, a vector threshold, a weight average).
TRAIN = ("train", "--preset", "tiny", "--seq-len", "64", "--population", "128", "--save-every", "5",
         "--print-every", "5", "--sample-every", "0", "--cooldown", "0.3", "--max-z", "100",
         "--weight-decay", "0.1", "--vector-z", "0.5", "--weight-average", "1")


def final_state(cwd: Path, run_dir: str) -> dict:
    """Step, weights and state hashes of the run's latest checkpoint, from the shell."""
    listing = json.loads(run_cli("ckpt", "list", "--run-dir", run_dir, "--json", cwd=cwd, check=True).stdout)
    newest = max((r for r in listing if r["valid"] and r["name"] != "egg.ckpt.best"), key=lambda r: r["step"])
    return json.loads(run_cli("ckpt", "show", f"{run_dir}/{newest['name']}", "--json", cwd=cwd, check=True).stdout)


def logged_losses(cwd: Path, run_dir: str) -> dict[int, str]:
    """step -> printed loss, from training.log (the last occurrence wins after a resume)."""
    losses = {}
    for line in (cwd / run_dir / "training.log").read_text().splitlines():
        if "| loss " in line:
            step = int(line.split("step ")[1].split(" ")[0])
            losses[step] = line.split("| loss ")[1].split(" ")[0]
    return losses


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict, dict]:
    cwd = tmp_path_factory.mktemp("uninterrupted")
    from conftest import headered_corpus

    (cwd / "input.txt").write_bytes(headered_corpus())
    run_cli(*TRAIN, "--steps", str(STEPS), "--threads", "2", "--run-dir", "A", cwd=cwd, check=True)
    state = final_state(cwd, "A")
    assert state["config"]["cooldown_end"] == STEPS, "the resumed runs below must cross the cooldown"
    return cwd, state, logged_losses(cwd, "A")


def start_training(cwd: Path, run_dir: str, steps: int = STEPS, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mlm.egg", *TRAIN, "--steps", str(steps), "--threads", "2",
                             "--run-dir", run_dir], cwd=cwd, env=cli_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_checkpoint(cwd: Path, run_dir: str, step: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    log = cwd / run_dir / "training.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and any(f"checkpoint step {s} " in log.read_text() for s in range(step, STEPS + 1)):
            return
        assert proc.poll() is None, "training ended before the kill point"
        time.sleep(0.01)
    raise AssertionError("no checkpoint appeared in time")


def assert_same_as_uninterrupted(cwd: Path, run_dir: str, uninterrupted, resumed_from: int) -> None:
    _, expected, expected_losses = uninterrupted
    got = final_state(cwd, run_dir)
    assert got["step"] == STEPS
    assert got["weights_sha256"] == expected["weights_sha256"]
    assert got["state_sha256"] == expected["state_sha256"]
    losses = logged_losses(cwd, run_dir)
    for step, loss in expected_losses.items():
        if step > resumed_from:
            assert losses[step] == loss, f"loss at step {step} differs after resume"


@pytest.mark.parametrize("kill_after_step", [5, 15])
def test_sigkill_then_resume_is_bit_exact(workdir: Path, uninterrupted, kill_after_step: int) -> None:
    proc = start_training(workdir, "B")
    wait_for_checkpoint(workdir, "B", kill_after_step, proc)
    proc.kill()
    proc.wait()
    resumed_from = final_state(workdir, "B")["step"]
    assert resumed_from < STEPS
    # Resume with a different thread count: results must not depend on it.
    run_cli(*TRAIN, "--steps", str(STEPS), "--threads", "1", "--run-dir", "B", cwd=workdir, check=True)
    assert "resume from the latest valid slot at step" in (workdir / "B" / "training.log").read_text()
    assert_same_as_uninterrupted(workdir, "B", uninterrupted, resumed_from)


@pytest.mark.parametrize("write_number", [3, 6])
def test_kill_during_a_checkpoint_write(workdir: Path, uninterrupted, write_number: int) -> None:
    proc = start_training(workdir, "C", MLM_TEST_KILL_DURING_SAVE=str(write_number))
    assert proc.wait(timeout=120) == -signal.SIGKILL
    assert list((workdir / "C").glob(".egg.ckpt.*.tmp-*")), "the kill should leave a half-written temp file"
    resumed_from = final_state(workdir, "C")["step"]
    run_cli(*TRAIN, "--steps", str(STEPS), "--run-dir", "C", cwd=workdir, check=True)
    assert not list((workdir / "C").glob(".egg.ckpt.*.tmp-*"))
    assert_same_as_uninterrupted(workdir, "C", uninterrupted, resumed_from)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_and_stops(workdir: Path, uninterrupted, sig: int, code: int) -> None:
    proc = start_training(workdir, "D")
    wait_for_checkpoint(workdir, "D", 5, proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == code
    log = (workdir / "D" / "training.log").read_text()
    stopped_at = int(log.split(f"{signal.Signals(sig).name} at step ")[1].split(":")[0])
    assert f"checkpoint step {stopped_at} " in log
    assert final_state(workdir, "D")["step"] == stopped_at
    run_cli(*TRAIN, "--steps", str(STEPS), "--run-dir", "D", cwd=workdir, check=True)
    assert_same_as_uninterrupted(workdir, "D", uninterrupted, stopped_at)


def test_second_trainer_is_refused_naming_the_holder(workdir: Path) -> None:
    proc = start_training(workdir, "E", steps=1_000_000)  # still running when the second trainer starts
    try:
        wait_for_checkpoint(workdir, "E", 5, proc)
        second = run_cli("train", "--steps", "2", "--run-dir", "E", cwd=workdir)
        assert second.returncode != 0
        assert f"pid {proc.pid}" in second.stderr.decode()
    finally:
        proc.kill()
        proc.wait()
    # The killed holder's lock never blocks a resume.
    run_cli("train", "--steps", "20", "--run-dir", "E", cwd=workdir, check=True)


def test_contradicting_flags_name_the_fields(workdir: Path) -> None:
    run_cli("train", "--preset", "tiny", "--steps", "5", "--run-dir", "F", cwd=workdir, check=True)
    result = run_cli("train", "--preset", "tiny", "--hidden", "64", "--seed", "9", "--steps", "10", "--run-dir", "F",
                     cwd=workdir)
    err = result.stderr.decode()
    assert result.returncode != 0 and "hidden (checkpoint 32, given 64)" in err and "seed" in err
    # Steps and threads may differ freely.
    run_cli("train", "--steps", "10", "--threads", "1", "--run-dir", "F", cwd=workdir, check=True)


def test_damaged_latest_slot_is_skipped(workdir: Path) -> None:
    run_cli("train", "--preset", "tiny", "--steps", "10", "--save-every", "5", "--run-dir", "G", cwd=workdir,
            check=True)
    slot1 = workdir / "G" / "egg.ckpt.1"
    data = bytearray(slot1.read_bytes())
    data[len(data) // 2] ^= 0xFF
    slot1.write_bytes(bytes(data))
    named = run_cli("sample", "--run-dir", "G", "--ckpt", "1", cwd=workdir)
    assert named.returncode != 0 and "checksum mismatch" in named.stderr.decode()
    listing = run_cli("ckpt", "list", "--run-dir", "G", cwd=workdir, check=True).stdout.decode()
    assert "egg.ckpt.1" in listing and "INVALID: checksum mismatch" in listing
    result = run_cli("train", "--steps", "12", "--run-dir", "G", cwd=workdir, check=True)
    out = result.stdout.decode()
    assert "skipping egg.ckpt.1: checksum mismatch" in out
    assert "resume from the latest valid slot at step 5" in out


@pytest.mark.parametrize("variable", ["MLM_RESUME_BEST", "EGG_RESUME_BEST"])
def test_resume_best_by_environment(workdir: Path, variable: str) -> None:
    """MLM_RESUME_BEST=1, and EGG_RESUME_BEST=1 (its alias, the reference's name), resume from the best file;
    unset, the latest slot wins."""
    run_cli("train", "--preset", "tiny", "--steps", "20", "--save-every", "10", "--run-dir", "K", cwd=workdir,
            check=True)
    best_step = json.loads(run_cli("ckpt", "show", "K/egg.ckpt.best", "--json", cwd=workdir, check=True).stdout)["step"]
    out = run_cli("train", "--steps", "21", "--run-dir", "K", cwd=workdir, check=True,
                  env=cli_env(**{variable: "1"})).stdout.decode()
    assert f"resume from egg.ckpt.best at step {best_step}" in out
    out = run_cli("train", "--steps", "22", "--run-dir", "K", cwd=workdir, check=True).stdout.decode()
    assert "resume from the latest valid slot at step 21" in out


def test_fresh_moves_the_old_run_aside(workdir: Path) -> None:
    run_cli("train", "--preset", "tiny", "--steps", "30", "--save-every", "10", "--run-dir", "H", cwd=workdir,
            check=True)
    refused = run_cli("train", "--resume", "none", "--steps", "5", "--run-dir", "H", cwd=workdir)
    assert refused.returncode != 0 and "--fresh" in refused.stderr.decode()
    run_cli("train", "--preset", "tiny", "--resume", "none", "--fresh", "--steps", "5", "--run-dir", "H",
            cwd=workdir, check=True)
    archives = [p for p in (workdir / "H").iterdir() if p.name.startswith("old-")]
    assert archives and any((a / "egg.ckpt.best").exists() for a in archives)
    assert final_state(workdir, "H")["step"] == 5


def test_resolve_start_decides_the_run_without_changing_the_settings() -> None:
    import dataclasses

    import numpy as np

    from mlm.egg.checkpoint import Checkpoint
    from mlm.egg.config import preset
    from mlm.egg.train import TrainSettings, resolve_start
    from mlm.errors import MlmError

    settings = TrainSettings(config=preset("tiny"), run_dir=Path("R"), steps=100, cooldown=0.25, seed=3,
                             explicit={"population": preset("tiny").population})
    as_given = dataclasses.asdict(settings)
    fresh = resolve_start(settings, None)
    assert fresh.checkpoint is None and fresh.run_seed == 3
    assert (fresh.config.cooldown_start, fresh.config.cooldown_end) == (75, 100)
    saved = preset("tiny").replace(cooldown_start=30, cooldown_end=40)
    checkpoint = Checkpoint(saved, 12, 9, 0, np.zeros(4, np.int8), np.zeros(2, np.int8))
    resumed = resolve_start(settings, checkpoint, "egg.ckpt.best")
    assert (resumed.config, resumed.run_seed, resumed.checkpoint, resumed.origin) == (saved, 9, checkpoint,
                                                                                      "egg.ckpt.best")
    contradicting = dataclasses.replace(settings, explicit={"hidden": saved.hidden * 2}, seed_explicit=True)
    with pytest.raises(MlmError, match=r"contradict the checkpoint in R: hidden .*; seed \(checkpoint 9, given 3\)"):
        resolve_start(contradicting, checkpoint)
    assert dataclasses.asdict(settings) == as_given
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.config = saved  # type: ignore[misc]


def test_ring_keeps_ten_slots(workdir: Path) -> None:
    run_cli("train", "--preset", "tiny", "--steps", "24", "--save-every", "2", "--run-dir", "I", cwd=workdir,
            check=True)
    slots = sorted(p.name for p in (workdir / "I").glob("egg.ckpt.[0-9]"))
    assert len(slots) == 10
    assert final_state(workdir, "I")["step"] == 24


def test_full_disk_during_save_stops_cleanly(workdir: Path, monkeypatch) -> None:
    """ENOSPC on the third checkpoint write: clear error, earlier slots intact, a crash row logged."""
    import errno

    from mlm.egg import checkpoint
    from mlm.egg.config import preset
    from mlm.egg.train import TrainSettings, train
    from mlm.errors import MlmError

    real_write, calls = os.write, []

    def failing_write(fd, data):
        calls.append(1)
        if len(calls) >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.chdir(workdir)
    monkeypatch.setattr(checkpoint.os, "write", failing_write)
    settings = TrainSettings(config=preset("tiny"), run_dir=workdir / "J", steps=20, save_every=5,
                             sample_every=0, quiet=True)
    with pytest.raises(MlmError, match="disk full"):
        train(settings)
    monkeypatch.setattr(checkpoint.os, "write", real_write)
    assert final_state(workdir, "J")["step"] == 5
    assert "\tcrash\t" in (workdir / "results.tsv").read_text()
