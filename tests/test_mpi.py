"""Distributed training under a real ``mpiexec``: the bits of one process, faults, refusals.

Every test starts real MPI jobs (the MPICH launcher from the ``mpi`` extra) of ``python -m mlm.egg
train`` on the ``tiny`` preset with one thread per rank.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from mlm.egg.distributed import CONTROL_WORDS

pytest.importorskip("mpi4py")

MPIEXEC = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
#: 22 pairs: shares of 8-7-7 under three ranks, 11-11 under two.
RUN = ["--preset", "tiny", "--threads", "1", "--population", "44", "--print-every", "4", "--sample-every", "6",
       "--eval-every", "6", "--eval-bytes", "2048", "--quiet"]


def train_command(run_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "mlm.egg", "train", "--run-dir", str(run_dir),
            "--results", str(run_dir.parent / "results.tsv"), *RUN, *args]


def mpi(n: int, command: list[str]) -> list[str]:
    return [MPIEXEC, "-n", str(n), *command]


def run(command: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def hashes(run_dir: Path) -> tuple[int, str, str]:
    """(step, weights_sha256, state_sha256) of the run's latest checkpoint."""
    out = run([sys.executable, "-m", "mlm.egg", "ckpt", "list", "--run-dir", str(run_dir), "--json"])
    latest = max((r for r in json.loads(out.stdout) if r["valid"] and r["name"] != "egg.ckpt.best"),
                 key=lambda r: r["step"])
    show = run([sys.executable, "-m", "mlm.egg", "ckpt", "show", str(run_dir / latest["name"]), "--json"])
    info = json.loads(show.stdout)
    return info["step"], info["weights_sha256"], info["state_sha256"]


#: The tests that signal one rank find its pid through /proc (Linux).
needs_proc = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds a rank's pid through /proc")


def rank_pid(job: str, rank: int, deadline: float = 30) -> int:
    """The pid of MPI rank ``rank`` of the job whose environment carries MLM_TEST_JOB=job."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for proc in Path("/proc").iterdir():
            try:
                environ = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"MLM_TEST_JOB={job}".encode() in environ and f"PMI_RANK={rank}".encode() in environ:
                return int(proc.name)
        time.sleep(0.05)
    raise AssertionError(f"rank {rank} of job {job} never appeared")


def wait_for(path: Path, deadline: float = 60) -> None:
    end = time.monotonic() + deadline
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict[int, tuple[int, str, str]]:
    """The hashes of a one-process run at steps 8 and 12."""
    base = tmp_path_factory.mktemp("one")
    out = {}
    for steps in (8, 12):
        result = run(train_command(base / f"run{steps}", "--steps", str(steps), "--distributed", "off"))
        assert result.returncode == 0, result.stderr
        out[steps] = hashes(base / f"run{steps}")
    return out


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_ranks_give_the_bits_of_one_process(tmp_path: Path, one_process, ranks: int) -> None:
    result = run(mpi(ranks, train_command(tmp_path / "run", "--steps", "12", "--distributed", "mpi")))
    assert result.returncode == 0, result.stderr
    assert hashes(tmp_path / "run") == one_process[12]
    log = (tmp_path / "run" / "training.log").read_text()
    assert f"distributed: {ranks} rank{'s' if ranks > 1 else ''} on" in log
    assert "eval step 12" in log and "sample step 6" in log
    rows = (tmp_path / "results.tsv").read_text().splitlines()
    assert len(rows) == 2, "rank 0 alone appends to results.tsv"


def test_resume_under_another_number_of_ranks(tmp_path: Path, one_process) -> None:
    """2 ranks then 3 ranks; and a one-process checkpoint resumed by 2 ranks, then by one process again."""
    assert run(mpi(2, train_command(tmp_path / "a", "--steps", "8"))).returncode == 0
    assert hashes(tmp_path / "a") == one_process[8]
    assert run(mpi(3, train_command(tmp_path / "a", "--steps", "12"))).returncode == 0
    assert hashes(tmp_path / "a") == one_process[12]

    assert run(train_command(tmp_path / "b", "--steps", "4", "--distributed", "off")).returncode == 0
    assert run(mpi(2, train_command(tmp_path / "b", "--steps", "8"))).returncode == 0
    assert hashes(tmp_path / "b") == one_process[8]
    assert run(train_command(tmp_path / "b", "--steps", "12")).returncode == 0
    assert hashes(tmp_path / "b") == one_process[12]


def test_the_sliced_update_gives_the_bits_of_one_process_and_resumes_under_any_n(tmp_path: Path) -> None:
    """Two layers: 25 update tasks and 22 pairs, neither divisible by 3. The sliced update (the default) under
    1, 2 and 3 ranks and the replicated one end with the one-process bits, vote memory and weight average
    included (in the
    state hash); a sliced run resumed under another N, or by one process, continues bit-exactly, so each
    checkpoint holds every slice's vote memory and each resume hands every rank all of it."""
    two_layers = ("--layers", "2", "--weight-average", "1")
    for steps in (8, 12):
        assert run(train_command(tmp_path / f"one{steps}", *two_layers, "--steps", str(steps),
                                 "--distributed", "off")).returncode == 0
    for ranks, update in ((1, "sliced"), (2, "sliced"), (3, "sliced"), (3, "replicated")):
        run_dir = tmp_path / f"{update}{ranks}"
        result = run(mpi(ranks, train_command(run_dir, *two_layers, "--steps", "12", "--distributed", "mpi",
                                              "--mpi-update", update)))
        assert result.returncode == 0, result.stderr
        assert hashes(run_dir) == hashes(tmp_path / "one12"), (ranks, update)
        mode = "replicated" if ranks == 1 else update
        assert f"pairs each, {mode} update" in (run_dir / "training.log").read_text()

    resumed = tmp_path / "resumed"
    assert run(mpi(3, train_command(resumed, *two_layers, "--steps", "4"))).returncode == 0
    assert run(mpi(2, train_command(resumed, *two_layers, "--steps", "8"))).returncode == 0
    assert hashes(resumed) == hashes(tmp_path / "one8")
    assert run(train_command(resumed, *two_layers, "--steps", "12")).returncode == 0
    assert hashes(resumed) == hashes(tmp_path / "one12")


def test_rank_0s_clock_ends_a_time_budget_and_fixes_the_cooldown_for_every_rank(tmp_path: Path) -> None:
    """--time-budget and its cooldown follow rank 0's clock, sent in the exchange: every rank stops after
    the same step and adopts the same schedule (else the weight check at the next checkpoint fails)."""
    result = run(mpi(2, train_command(tmp_path / "run", "--time-budget", "3", "--cooldown", "0.8",
                                      "--print-every", "50", "--sample-every", "0", "--eval-every", "0")))
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "run" / "training.log").read_text()
    assert "cooldown fixed at steps" in log
    step, _, _ = hashes(tmp_path / "run")
    start = int(log.split("cooldown fixed at steps ")[1].split("-")[0].replace(",", ""))
    assert step > start, "no checkpoint after the cooldown began: the weight check would prove nothing"


def test_checkpoints_by_the_clock_are_taken_by_every_rank_at_the_same_step(tmp_path: Path) -> None:
    """Saving gathers every rank's state: the clock that makes a checkpoint due is rank 0's, sent in the
    exchange, so ranks whose clocks disagree still save together (else the job would stall in the gather)."""
    steps = ("--steps", "60", "--save-seconds", "0.02", "--eval-every", "0", "--sample-every", "0")
    assert run(train_command(tmp_path / "whole", *steps, "--distributed", "off")).returncode == 0
    result = run(mpi(3, train_command(tmp_path / "run", *steps)), env={"MLM_MPI_TIMEOUT": "5"})
    assert result.returncode == 0, result.stderr
    assert hashes(tmp_path / "run") == hashes(tmp_path / "whole")
    saves = (tmp_path / "run" / "training.log").read_text().count("checkpoint step")
    assert saves >= 3, f"only {saves} checkpoints: the clock never made one due mid-run"


def long_run(run_dir: Path) -> list[str]:
    return train_command(run_dir, "--steps", "1500", "--print-every", "100", "--save-every", "100",
                         "--sample-every", "0", "--eval-every", "0")


@needs_proc
def test_a_killed_rank_ends_the_job_and_a_rerun_resumes_bit_exactly(tmp_path: Path) -> None:
    assert run([*long_run(tmp_path / "whole"), "--distributed", "off"]).returncode == 0
    job = uuid.uuid4().hex
    proc = subprocess.Popen(mpi(2, long_run(tmp_path / "run")), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "MLM_TEST_JOB": job})
    try:
        wait_for(tmp_path / "run" / "egg.ckpt.0")
        os.kill(rank_pid(job, 1), signal.SIGKILL)
        killed = time.monotonic()
        proc.wait(timeout=30)
        assert time.monotonic() - killed <= 5
    finally:
        proc.kill()
    assert proc.returncode != 0
    step, _, _ = hashes(tmp_path / "run")
    assert 0 < step < 1500, "the job was not killed mid-run"
    result = run(mpi(2, long_run(tmp_path / "run")))
    assert result.returncode == 0, result.stderr
    assert hashes(tmp_path / "run") == hashes(tmp_path / "whole")


def test_sigterm_stops_every_rank_after_the_same_step_and_rank_0_saves(tmp_path: Path) -> None:
    proc = subprocess.Popen(mpi(2, long_run(tmp_path / "run")), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_for(tmp_path / "run" / "egg.ckpt.0")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    log = (tmp_path / "run" / "training.log").read_text()
    assert "every rank stops after step" in log and "SIGTERM at step" in log
    stopped = int(log.split("SIGTERM at step ")[1].split(":")[0])
    assert hashes(tmp_path / "run")[0] == stopped


def test_an_exception_on_one_rank_ends_the_job_promptly(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run(mpi(3, long_run(tmp_path / "run")), env={"MLM_TEST_FAIL_AT": "2:150"}, timeout=60)
    assert result.returncode != 0
    assert time.monotonic() - started < 30
    assert "error: rank 2 of 3" in result.stderr
    assert "asked rank 2 to fail at step 150" in result.stderr


@needs_proc
def test_a_stalled_rank_hits_the_exchange_deadline(tmp_path: Path) -> None:
    job = uuid.uuid4().hex
    proc = subprocess.Popen(mpi(2, long_run(tmp_path / "run")), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "MLM_TEST_JOB": job, "MLM_MPI_TIMEOUT": "0.5"})
    try:
        wait_for(tmp_path / "run" / "egg.ckpt.0")
        os.kill(rank_pid(job, 1), signal.SIGSTOP)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "error: rank 0 of 2" in err and "no answer from the other ranks" in err


def test_ranks_with_different_data_are_refused(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "a.txt", tmp_path / "b.txt"
    ours.write_bytes(b"function f(x) { return x + 1; }\n" * 200)
    theirs.write_bytes(b"function g(y) { return y - 1; }\n" * 200)
    command = train_command(tmp_path / "run", "--steps", "4")
    result = run([MPIEXEC, "-n", "1", *command, "--data", str(ours), ":", "-n", "1", *command, "--data", str(theirs)])
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "rank 1" in lines[0] and "different data sha256" in lines[0]
    assert not list((tmp_path / "run").glob("egg.ckpt.*")), "nothing trained"


def test_what_rank_0_decides_at_start_is_not_a_difference(tmp_path: Path) -> None:
    """A cooldown fixed from --steps changes rank 0's configuration before the ranks compare settings."""
    flags = ("--steps", "8", "--cooldown", "0.5")
    assert run(train_command(tmp_path / "one", *flags, "--distributed", "off")).returncode == 0
    result = run(mpi(2, train_command(tmp_path / "two", *flags)))
    assert result.returncode == 0, result.stderr
    assert hashes(tmp_path / "two") == hashes(tmp_path / "one")


def test_ranks_started_with_different_settings_are_refused(tmp_path: Path) -> None:
    command = train_command(tmp_path / "run")
    result = run([MPIEXEC, "-n", "1", *command, "--steps", "4", ":", "-n", "1", *command, "--steps", "5"])
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "rank 1" in lines[0] and "steps (4 on rank 0, 5 here)" in lines[0], result.stderr


def test_more_ranks_than_pairs_are_refused(tmp_path: Path) -> None:
    result = run(mpi(3, train_command(tmp_path / "run", "--steps", "4", "--population", "4", "--streams", "2")))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: 3 ranks but only 2 pairs per step (--population 4): start at most 2 ranks, "
                     "or raise --population"]


def test_an_unwritable_run_directory_ends_the_job_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run(mpi(2, train_command(blocker / "run", "--steps", "4")), timeout=60)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "rank 0 of 2" in lines[0] and "--run-dir" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_without_mpi_the_error_says_what_to_install(tmp_path: Path) -> None:
    fake = tmp_path / "nompi" / "mpi4py"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'mpi4py'\")\n")
    path = os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])
    for env in ({"PYTHONPATH": path}, {"MPI4PY_LIBMPI": str(tmp_path / "missing" / "libmpi.so.12")}):
        result = run(train_command(tmp_path / "run", "--steps", "4", "--distributed", "mpi"), env=env)
        assert result.returncode == 2
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert result.stderr.startswith("error: distributed training needs mpi4py and an MPI library")
        assert 'pip install "mlm[mpi]"' in result.stderr


def test_auto_stays_one_process_without_a_launcher(tmp_path: Path) -> None:
    """No launcher variables: MPI is not even imported (a broken MPI library does not matter)."""
    env = {"MPI4PY_LIBMPI": str(tmp_path / "missing" / "libmpi.so.12")}
    result = run(train_command(tmp_path / "run", "--steps", "4"), env=env)
    assert result.returncode == 0, result.stderr
    assert "distributed:" not in (tmp_path / "run" / "training.log").read_text()


def test_bench_mpi_reports_the_exchange_and_a_model(tmp_path: Path) -> None:
    result = run(mpi(2, [sys.executable, "-m", "mlm.egg", "bench-mpi", "--preset", "tiny", "--steps", "3",
                         "--json"]))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ranks"] == 2 and report["weights_agree"] is True
    assert 0 < report["update_share"] < 1 and 0 < report["allgather_polled_s"] < 0.1
    assert report["waiting_cpu"]["polled"] < report["waiting_cpu"]["blocking"]
    model = report["model"]["ranks"]
    assert model["1"]["efficiency"] == pytest.approx(1.0)
    # Two ranks send their control words and the losses of their 32 of tiny's 64 members, 8 bytes each.
    assert model["2"]["bytes_per_step"] == 2 * (CONTROL_WORDS + 2 * 32) * 8
    assert 1 > model["2"]["efficiency"] > model["16"]["efficiency"] > 0
    # A population that grows with the ranks keeps each rank's forward pass whole: better than a split one.
    assert model["16"]["sliced_efficiency"] < model["16"]["grown_efficiency"] < 1
    # The sliced update: its own distributed steps, and each rank's moves in two bits per weight (24,736 for tiny).
    assert report["sliced"]["weights_agree"] is True and report["sliced"]["moves_wait_s"] > 0
    assert 24736 // 4 <= model["2"]["moves_bytes_per_step"] <= 24736 // 4 + 2
    assert set(report["slice_update_s"]) == {"2", "4", "8", "16"} and min(report["slice_update_s"].values()) > 0
    assert 1 > model["2"]["sliced_efficiency"] > model["16"]["sliced_efficiency"] > 0
