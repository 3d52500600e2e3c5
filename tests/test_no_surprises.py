"""Issue 17: every bad value a clear error, resume never mixes models, a run that ends says what it did.

End to end through real ``python -m mlm.egg`` processes, real files and real signals; the
property tests drive the option parser and the checkpoint reader in-process (they are rejected
before any training, so a subprocess would only add start-up time).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import cli_env, headered_corpus, run_cli
from mlm.egg import cli
from mlm.egg.checkpoint import MAX_CREATED, Checkpoint, CheckpointError, decode, encode, read_checkpoint
from mlm.egg.config import preset
from mlm.egg.sample import SamplingOptions
from mlm.egg.train import expected_sizes
from mlm.errors import MlmError

REPO = Path(__file__).resolve().parents[1]
TINY = ("train", "--preset", "tiny", "--sample-every", "0")


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The single stderr line of a failed command, which must name every needle."""
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 2, (result.returncode, err, result.stdout.decode(errors="replace"))
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return lines[0]


def ckpt_json(path: Path, cwd: Path) -> dict:
    return json.loads(run_cli("ckpt", "show", str(path), "--json", cwd=cwd, check=True).stdout)


def load(path: Path) -> Checkpoint:
    return read_checkpoint(path, expected_sizes)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")


# -- resume never mixes models -------------------------------------------------------------------


def test_an_explicit_preset_that_contradicts_the_checkpoint_is_an_error(workdir: Path) -> None:
    run_cli(*TINY, "--steps", "4", "--run-dir", "R", cwd=workdir, check=True)
    before = {p.name: p.read_bytes() for p in (workdir / "R").glob("egg.ckpt.*")}
    result = run_cli("train", "--preset", "small", "--steps", "8", "--run-dir", "R", cwd=workdir)
    one_line_error(result, "hidden (checkpoint 32, --preset small 64)", "population", "--fresh", "--run-dir")
    assert {p.name: p.read_bytes() for p in (workdir / "R").glob("egg.ckpt.*")} == before
    assert "error: settings contradict" in (workdir / "R" / "training.log").read_text()  # start-up errors logged
    # The same preset, given explicitly, resumes.
    resumed = run_cli(*TINY, "--steps", "6", "--run-dir", "R", cwd=workdir, check=True)
    assert "resume from the latest valid slot at step 4" in output(resumed)


def test_a_slot_of_another_run_is_reported_and_never_resumed(workdir: Path) -> None:
    run_cli(*TINY, "--steps", "6", "--save-every", "2", "--run-dir", "R", cwd=workdir, check=True)
    run_cli(*TINY, "--hidden", "48", "--steps", "20", "--run-dir", "OTHER", cwd=workdir, check=True)
    stray = (workdir / "OTHER" / "egg.ckpt.0").read_bytes()
    (workdir / "R" / "egg.ckpt.9").write_bytes(stray)  # a higher step than any of R's own slots

    listing = run_cli("ckpt", "list", "--run-dir", "R", cwd=workdir, check=True).stdout.decode()
    line = next(row for row in listing.splitlines() if row.startswith("egg.ckpt.9"))
    assert "ANOTHER RUN: hidden 48 (run: 32)" in line and "never resumed" in line
    sampled = run_cli("sample", "--run-dir", "R", "--length", "20", cwd=workdir, check=True).stdout
    from_own = run_cli("sample", "--run-dir", "R", "--ckpt", "2", "--length", "20", cwd=workdir, check=True).stdout
    assert sampled == from_own, "--ckpt latest is the run's own newest slot (step 6, slot 2)"

    resumed = output(run_cli(*TINY, "--steps", "10", "--save-every", "2", "--run-dir", "R", cwd=workdir,
                             check=True))
    assert "egg.ckpt.9 (step 20) holds another run than the one resumed (hidden 48 (run: 32))" in resumed
    assert "resume from the latest valid slot at step 6" in resumed
    (moved,) = (workdir / "R").glob("old-*/egg.ckpt.9")
    assert moved.read_bytes() == stray, "the other run's file is kept, byte for byte"
    own = [load(p) for p in sorted((workdir / "R").glob("egg.ckpt.*"))]
    assert {c.config.hidden for c in own} == {32}
    # Bit for bit the run that was never disturbed.
    run_cli(*TINY, "--steps", "10", "--save-every", "2", "--run-dir", "CLEAN", cwd=workdir, check=True)
    latest = max(own, key=lambda c: c.step)
    clean = max((load(p) for p in (workdir / "CLEAN").glob("egg.ckpt.[0-9]")), key=lambda c: c.step)
    assert latest.step == clean.step == 10
    assert (latest.weights_sha256(), latest.state_sha256()) == (clean.weights_sha256(), clean.state_sha256())


def test_steps_the_run_has_passed_say_so_instead_of_a_silent_no_op(workdir: Path) -> None:
    run_cli(*TINY, "--steps", "10", "--run-dir", "R", "--results", "r.tsv", cwd=workdir, check=True)
    before = {p.name: p.read_bytes() for p in (workdir / "R").glob("egg.ckpt.*")}
    for steps in ("5", "10"):
        result = run_cli(*TINY, "--steps", steps, "--run-dir", "R", "--results", "r.tsv", cwd=workdir, check=True)
        assert (f"nothing to train: the run in R is at step 10, which --steps {steps} does not pass; give a "
                "larger --steps") in result.stdout.decode()
    assert {p.name: p.read_bytes() for p in (workdir / "R").glob("egg.ckpt.*")} == before
    assert len((workdir / "r.tsv").read_text().splitlines()) == 2, "no results row for a run that did nothing"


# -- one corpus per run, and the README walk-through -------------------------------------------


def test_a_data_change_under_a_run_is_an_error_naming_the_ways_out(workdir: Path) -> None:
    run_cli(*TINY, "--steps", "4", "--run-dir", "R", cwd=workdir, check=True)
    (workdir / "input.txt").write_bytes(headered_corpus(seed=1))
    one_line_error(run_cli(*TINY, "--steps", "8", "--run-dir", "R", cwd=workdir),
                   "differs from the data", "--fresh", "--run-dir", "--allow-data-change")
    assert len(list((workdir / "R").glob("egg.ckpt.[0-9]"))) == 1, "nothing was trained or written"
    allowed = run_cli(*TINY, "--steps", "8", "--run-dir", "R", "--allow-data-change", cwd=workdir, check=True)
    assert "--allow-data-change: the model trained on" in output(allowed)
    fresh = run_cli(*TINY, "--steps", "8", "--run-dir", "R", "--fresh", cwd=workdir, check=True)
    assert "warning" not in output(fresh)


def readme_commands() -> list[str]:
    """The ``python -m mlm.egg`` commands of the README's quick start and workflow, in order."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)[:2]
    commands = []
    for block in blocks:
        for line in block.splitlines():
            command = line.split("#")[0].split("&&")[-1].strip()
            if command.startswith("python -m mlm.egg"):
                commands.append(command)
    return commands


#: Short versions of the README's commands: the same flags plus a small model and a few steps.
SHORTER = {"train": ["--preset", "tiny", "--steps", "20"], "judge": ["--samples", "2", "--length", "24"]}


def test_the_readme_walk_through_runs_without_warnings(tmp_path: Path) -> None:
    commands = readme_commands()
    assert commands[0].startswith("python -m mlm.egg train") and "--run-dir" in commands[0], commands
    assert sum(c.startswith("python -m mlm.egg train") for c in commands) == 3, commands
    quick_start, workflow = commands[0], commands[1:]
    run_cli(*quick_start.split()[3:], *SHORTER["train"], cwd=tmp_path, check=True)
    (tmp_path / "input.txt").write_bytes(headered_corpus(n_files=80))  # what build_threejs_dataset.sh writes
    trains = 0
    for command in workflow:
        args = re.findall(r'"[^"]*"|\S+', command)[3:]
        args = [a.strip('"') for a in args]
        if args[0] == "train":
            trains += 1
            args += ["--preset", "tiny", "--steps", str(20 * trains)]
        args += SHORTER.get(args[0], []) if args[0] != "train" else []
        result = run_cli(*args, cwd=tmp_path, check=True)
        assert "warning" not in output(result).lower(), (command, output(result))
    assert "resume from the latest valid slot at step 20" in (tmp_path / "egg-run" / "training.log").read_text()


# -- tracebacks become one clear line -----------------------------------------------------------


@pytest.mark.parametrize(("args", "needle"), [
    (("--seed", "-1"), "--seed"),
    (("--seed", str(2**64)), "--seed"),
    (("--noise-bits", "0"), "--noise-bits"),
    (("--threshold-z", "nan"), "--threshold-z"),
    (("--max-z", "nan"), "--max-z"),
    (("--eval-every", "-1"), "--eval-every"),
    (("--sample-every", "-1"), "--sample-every"),
    (("--time-budget", "0"), "--time-budget"),
    (("--time-budget", "-5"), "--time-budget"),
    (("--time-budget", "inf"), "--time-budget"),
    (("--eval-bytes", "0"), "--eval-bytes"),
    (("--threads", "1000"), "--threads"),
    (("--seq-len", str(2**40)), "--seq-len"),
])
def test_nonsense_train_values_are_one_line_before_anything_runs(tmp_path: Path, args: tuple, needle: str) -> None:
    result = run_cli("train", "--preset", "tiny", "--steps", "5", "--run-dir", "R", *args, cwd=tmp_path)
    one_line_error(result, needle)
    assert not (tmp_path / "R").exists()


def test_a_failed_start_leaves_no_run_directory(tmp_path: Path) -> None:
    one_line_error(run_cli("train", "--data", "missing.txt", "--run-dir", "R", cwd=tmp_path), "missing.txt")
    assert not (tmp_path / "R").exists()


@pytest.fixture
def trained(workdir: Path) -> Path:
    run_cli(*TINY, "--steps", "10", "--run-dir", "R", cwd=workdir, check=True)
    return workdir


def test_sample_nan_temperature_and_a_non_utf8_prompt(trained: Path) -> None:
    one_line_error(run_cli("sample", "--run-dir", "R", "--temperature", "nan", cwd=trained), "--temperature")
    prompt = b"\xff\xfeclass \xc3("  # not UTF-8: passed on as the bytes typed
    (trained / "prompt.bin").write_bytes(prompt)
    by_file = run_cli("sample", "--run-dir", "R", "--prompt-file", "prompt.bin", "--length", "30", "--raw",
                      cwd=trained, check=True).stdout
    direct = subprocess.run([sys.executable, "-m", "mlm.egg", "sample", "--run-dir", "R", b"--prompt", prompt,
                             "--length", "30", "--raw"], cwd=trained, env=cli_env(), capture_output=True)
    assert direct.returncode == 0, direct.stderr.decode(errors="replace")
    assert direct.stdout == by_file


def full_disk(path: Path) -> contextlib.AbstractContextManager:
    """A directory on a tiny tmpfs filled to the last byte (needs root and mount)."""

    @contextlib.contextmanager
    def mounted():
        path.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        try:
            with contextlib.suppress(OSError), open(path / "filler", "wb") as filler:
                while True:
                    filler.write(b"\0" * 4096)
                    filler.flush()
            yield path
        finally:
            subprocess.run(["umount", str(path)], check=True)

    return mounted()


def test_a_full_disk_at_start_is_one_line(workdir: Path) -> None:
    with full_disk(workdir / "disk") as disk:
        result = run_cli(*TINY, "--steps", "5", "--run-dir", str(disk / "R"), cwd=workdir)
        one_line_error(result, "cannot write in run directory", "No space left on device", "--run-dir")


def test_a_failed_save_is_reported_once_even_when_piped(workdir: Path) -> None:
    """A file-size limit makes the checkpoint write fail mid-run; the error must not print twice."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    result = subprocess.run([sys.executable, "-m", "mlm.egg", *TINY, "--steps", "5", "--run-dir", "R",
                             "--results", "r.tsv"], cwd=workdir, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, preexec_fn=limit)
    text = result.stdout.decode(errors="replace")
    assert result.returncode == 2, text
    assert "Traceback" not in text
    assert text.count("write failed") == 1, text


def crafted(ckpt: Checkpoint, **changes: object) -> bytes:
    """``ckpt``'s file with header fields changed and a valid checksum."""
    import hashlib
    import struct

    data = encode(ckpt)
    (header_len,) = struct.unpack_from("<I", data, 12)
    header = json.loads(data[16:16 + header_len])
    for key, value in changes.items():
        if key in header["config"]:
            header["config"][key] = value
        else:
            header[key] = value
    raw = json.dumps(header).encode()
    body = data[:12] + struct.pack("<I", len(raw)) + raw + data[16 + header_len:-32]
    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize(("change", "reason"), [
    ({"noise_bits": 0}, "invalid configuration"),
    ({"noise_bits": -3}, "invalid configuration"),
    ({"alpha_decay_steps": 2**40}, "invalid configuration"),
    ({"created": 1e308}, "invalid header"),
    ({"metrics": {"train_loss": -1.0, "val_bpb": None, "best_metric": None}}, "invalid header"),
    ({"extra": {"data_path": 7}}, "invalid header"),
])
def test_a_checksummed_header_with_nonsense_fields_is_rejected(trained: Path, change: dict, reason: str) -> None:
    good = trained / "R" / "egg.ckpt.0"
    bad = crafted(read_checkpoint(good, expected_sizes), **change)
    (trained / "R" / "egg.ckpt.5").write_bytes(bad)
    one_line_error(run_cli("ckpt", "show", "R/egg.ckpt.5", cwd=trained), reason)
    listing = run_cli("ckpt", "list", "--run-dir", "R", cwd=trained, check=True).stdout.decode()
    assert f"egg.ckpt.5     INVALID: {reason}" in listing


def test_a_flipped_version_bit_is_damage_not_a_newer_format(trained: Path) -> None:
    data = bytearray((trained / "R" / "egg.ckpt.0").read_bytes())
    data[8] ^= 0x04  # version 1 -> 5
    (trained / "flipped.ckpt").write_bytes(bytes(data))
    line = one_line_error(run_cli("ckpt", "show", "flipped.ckpt", cwd=trained), "checksum mismatch")
    assert "upgrade" not in line


# -- best and metrics -------------------------------------------------------------------------


def test_switching_evaluation_off_restarts_best_and_says_so(workdir: Path) -> None:
    run_cli(*TINY, "--steps", "10", "--eval-every", "5", "--eval-bytes", "2048", "--run-dir", "R",
            "--results", "r.tsv", cwd=workdir, check=True)
    old_best = (workdir / "R" / "egg.ckpt.best").read_bytes()
    assert ckpt_json(workdir / "R" / "egg.ckpt.best", workdir)["best_metric_name"] == "val_bpb"
    resumed = output(run_cli(*TINY, "--steps", "20", "--run-dir", "R", "--results", "r.tsv", cwd=workdir,
                             check=True))
    assert "best tracked val_bpb, and --eval-every is now off, so it tracks train_loss: best starts over" in resumed
    (moved,) = (workdir / "R").glob("old-*/egg.ckpt.best")
    assert moved.read_bytes() == old_best, "the val_bpb best is kept"
    best = ckpt_json(workdir / "R" / "egg.ckpt.best", workdir)
    assert (best["best_metric_name"], best["step"]) == ("train_loss", 20)
    assert best["metrics"]["val_bpb"] is None, "no stale val_bpb from step 10 on the weights of step 20"
    last_row = (workdir / "r.tsv").read_text().splitlines()[-1].split("\t")
    header = (workdir / "r.tsv").read_text().splitlines()[0].split("\t")
    assert last_row[header.index("val_bpb")] in ("", "-")


def test_eval_warns_when_the_data_file_changed(trained: Path) -> None:
    quiet = run_cli("eval", "--run-dir", "R", "--results", "r.tsv", cwd=trained, check=True)
    assert "warning" not in quiet.stderr.decode()
    (trained / "input.txt").write_bytes(headered_corpus(seed=3))
    changed = run_cli("eval", "--run-dir", "R", "--results", "r.tsv", cwd=trained, check=True)
    assert "input.txt changed since this checkpoint was trained on it" in changed.stderr.decode()


# -- checkpoint cadence, progress and the end of a run -----------------------------------------


def ring(run_dir: Path) -> list[int]:
    return sorted(load(p).step for p in run_dir.glob("egg.ckpt.[0-9]"))


def test_checkpoints_follow_the_clock_unless_save_every_is_given(workdir: Path) -> None:
    run_cli(*TINY, "--steps", "40", "--run-dir", "A", cwd=workdir, check=True)
    assert ring(workdir / "A") == [40], "a 40-step run of a second writes its final checkpoint only"
    run_cli(*TINY, "--steps", "40", "--save-every", "10", "--run-dir", "B", cwd=workdir, check=True)
    assert ring(workdir / "B") == [10, 20, 30, 40]
    run_cli(*TINY, "--steps", "14", "--save-seconds", "1e-9", "--run-dir", "C", cwd=workdir, check=True)
    assert ring(workdir / "C") == list(range(5, 15)), "saving at every step keeps the last ten"
    run_cli(*TINY, "--steps", "12", "--eval-every", "4", "--eval-bytes", "2048", "--run-dir", "D", cwd=workdir,
            check=True)
    assert ring(workdir / "D") == [4, 8, 12], "every evaluation is saved"


def test_the_first_step_is_reported_at_once_and_the_end_summarised(workdir: Path) -> None:
    result = run_cli(*TINY, "--steps", "12", "--print-every", "1000", "--eval-every", "6", "--eval-bytes", "2048",
                     "--run-dir", "R", cwd=workdir, check=True)
    text = output(result)
    assert "4,096 population-tokens per step" in text
    assert re.search(r"^step 1 \| loss [\d.]+ bits/byte .* s/step", text, re.M), text
    assert "finished: 12 steps in" in text and "now at step 12" in text
    assert re.search(r"val_bpb +[\d.]+ at step 12 on the first 2,048 validation bytes, (below|above) ", text), text
    assert re.search(r"best +val_bpb [\d.]+", text) and "baselines   unigram" in text
    assert "checkpoints R/" in text and "python -m mlm.egg sample --run-dir R --ckpt best" in text


def test_sigterm_summary_says_it_stopped(workdir: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "mlm.egg", *TINY, "--time-budget", "120", "--run-dir", "R"],
                            cwd=workdir, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for(lambda: "step 1 |" in log_text(workdir / "R"))
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert "stopped by SIGTERM:" in out.decode() and "resume      run the same command again" in out.decode()


# -- help, export, sweep ----------------------------------------------------------------------


def test_help_shows_preset_values_and_every_option_is_explained(tmp_path: Path) -> None:
    train_help = run_cli("train", "--help", cwd=tmp_path, check=True).stdout.decode()
    flat = " ".join(train_help.split())
    assert "--hidden INTEGER RANGE Model width (multiple of 16). [presets: tiny 32, small 64, reference 512]" in flat
    assert "[presets: tiny 4, small 4, reference 4]" in flat  # --threshold-z, in vote spreads
    def commands(group: click.Group):
        for command in group.commands.values():
            yield from commands(command) if isinstance(command, click.Group) else [command]

    for command in commands(cli.main):
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"{command.name} {param.opts} has no help text"


def test_export_refuses_to_overwrite_without_force(trained: Path) -> None:
    (trained / "w.npz").write_bytes(b"precious")
    one_line_error(run_cli("export", "--run-dir", "R", "w.npz", cwd=trained), "w.npz already exists", "--force")
    assert (trained / "w.npz").read_bytes() == b"precious"
    run_cli("export", "--run-dir", "R", "w.npz", "--force", cwd=trained, check=True)
    assert (trained / "w.npz").read_bytes() != b"precious"


def log_text(run_dir: Path) -> str:
    try:
        return (run_dir / "training.log").read_text()
    except OSError:
        return ""


def wait_for(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_to_a_sweep_reaches_its_training_run(workdir: Path) -> None:
    (workdir / "sweep.toml").write_text('budget_seconds = 120\neval_every = 100000\nthreads = 1\n'
                                        '[base]\npreset = "tiny"\nsample_every = 0\n[grid]\nseed = [1]\n')
    sweep = subprocess.Popen([sys.executable, "-m", "mlm.egg", "sweep", "sweep.toml", "--results", "r.tsv"],
                             cwd=workdir, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run_dir = workdir / "sweep-runs" / "seed=1"
    wait_for(lambda: "step 1 |" in log_text(run_dir))
    child = int(re.search(r"mlm train \(pid (\d+)\)", log_text(run_dir)).group(1))
    try:
        sweep.send_signal(signal.SIGTERM)
        sweep.communicate(timeout=60)
        assert sweep.returncode == 143
        assert not alive(child), "the training run stopped with the sweep"
        assert "=== end: interrupted" in log_text(run_dir)
        rows = (workdir / "r.tsv").read_text().splitlines()
        assert rows[-1].split("\t")[4] == "interrupted"
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


# -- property tests ---------------------------------------------------------------------------

NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e308", "-0", "0", "1", "2", "3", str(2**64), str(2**63), "-1"]),
)


def numeric_options(command: click.Command) -> list[str]:
    return [p.opts[0] for p in command.params
            if isinstance(p, click.Option) and not p.is_flag and isinstance(p.type, (click.types._NumberParamTypeBase))]


TRAIN_NUMERIC = numeric_options(cli.train)


def test_every_numeric_option_is_covered() -> None:
    assert {"--seed", "--steps", "--time-budget", "--threshold-z", "--hidden", "--save-seconds"} <= set(TRAIN_NUMERIC)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(option=st.sampled_from(TRAIN_NUMERIC), value=NUMBERS, tiny=st.booleans())
def test_any_train_value_parses_to_runnable_settings_or_a_usage_error(option: str, value: str, tiny: bool) -> None:
    """exit 2 (UsageError or MlmError) or settings the engine accepts: never another exception."""
    args = ["--preset", "tiny"] if tiny else []
    try:
        ctx = cli.train.make_context("train", [*args, option, value])
    except click.UsageError:
        return
    try:
        s = cli.train_settings(ctx.params, preset_given=tiny)
    except MlmError:
        return
    s.config.validate()
    assert 0 <= s.seed < 2**64 and 1 <= s.threads <= (os.cpu_count() or 1)
    assert s.time_budget is None or (math.isfinite(s.time_budget) and s.time_budget > 0)
    assert s.steps is None or 1 <= s.steps < 2**63
    assert s.print_every is None or s.print_every >= 1
    assert s.sample_every is None or s.sample_every >= 0
    assert s.eval_every >= 0 and s.eval_bytes >= 2
    assert s.save_every is None or s.save_every >= 1
    assert math.isfinite(s.save_seconds) and s.save_seconds > 0 and math.isfinite(s.cooldown)


SAMPLE_NUMERIC = numeric_options(cli.sample)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(option=st.sampled_from(SAMPLE_NUMERIC), value=NUMBERS)
def test_any_sample_value_is_a_usage_error_or_valid_options(option: str, value: str) -> None:
    try:
        ctx = cli.sample.make_context("sample", [option, value])
    except click.UsageError:
        return
    p = ctx.params
    SamplingOptions(p["temperature"], p["top_k"], p["min_p"], p["presence_penalty"], p["seed"]).validate()
    assert p["length"] >= 0 and 0 <= p["seed"] < 2**64


@settings(max_examples=150, deadline=None, derandomize=True)
@given(command=st.sampled_from(["eval", "judge", "bench"]), data=st.data())
def test_other_commands_numeric_values_parse_or_are_usage_errors(command: str, data: st.DataObject) -> None:
    cmd = cli.main.commands[command]
    option = data.draw(st.sampled_from(numeric_options(cmd)))
    value = data.draw(NUMBERS)
    try:
        ctx = cmd.make_context(command, [option, value])
    except click.UsageError:
        return
    for name, parsed in ctx.params.items():
        if isinstance(parsed, float):
            assert math.isfinite(parsed), (name, parsed)
        if isinstance(parsed, int) and not isinstance(parsed, bool):
            assert parsed >= 0, (name, parsed)


def small_checkpoint() -> Checkpoint:
    import numpy as np

    config = preset("tiny")
    n_weights, n_state = expected_sizes(config)
    return Checkpoint(config=config, step=3, run_seed=1, data_cursor=96, weights=np.zeros(n_weights, np.int8),
                      state=np.zeros(n_state, np.int8), metrics={"train_loss": 7.5, "val_bpb": None,
                                                                 "best_metric": 7.5})


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
#: Numbers at and beyond the edges of every field's range (JSON has no NaN or infinity).
EDGES = st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 0.5, -0.5,
                         25.0, 1e308, -1e308, 5e-324])
NUMBER = EDGES | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False, allow_infinity=False)
METRIC_VALUE = st.none() | NUMBER | JSON_VALUES
#: For each header field, values of the right JSON shape but any content, and values of any shape.
FIELD_VALUES = {
    **{name: NUMBER | JSON_VALUES for name in preset("tiny").to_dict()},
    "step": NUMBER, "run_seed": NUMBER, "data_cursor": NUMBER, "created": NUMBER | JSON_VALUES,
    "metrics": st.fixed_dictionaries({}, optional={k: METRIC_VALUE for k in ("train_loss", "val_bpb", "best_metric")})
    | JSON_VALUES,
    "best_metric_name": st.sampled_from(["val_bpb", "train_loss", "loss", ""]) | JSON_VALUES,
    "extra": st.fixed_dictionaries({}, optional={"data_path": JSON_VALUES, "data_sha256": JSON_VALUES}) | JSON_VALUES,
}


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(sorted(FIELD_VALUES)), data=st.data())
def test_a_checksummed_header_with_any_field_value_loads_cleanly_or_is_rejected(tmp_path: Path, field: str,
                                                                                 data: st.DataObject) -> None:
    value = data.draw(FIELD_VALUES[field])
    data = crafted(small_checkpoint(), **{field: value})
    try:
        ckpt = decode(data, "x.ckpt", expected_sizes)
    except CheckpointError as error:
        assert str(error).startswith("checkpoint x.ckpt: ") and "\n" not in str(error)
        return
    ckpt.config.validate()
    assert 0 <= ckpt.created <= MAX_CREATED and 0 <= ckpt.step < 2**63 and 0 <= ckpt.run_seed < 2**64
    assert all(v is None or 0 <= v <= 24 for v in ckpt.metrics.values())
    run_dir = tmp_path / f"run{abs(hash((field, repr(value))))}"
    run_dir.mkdir()
    (run_dir / "egg.ckpt.0").write_bytes(data)
    for args in (["ckpt", "list", "--run-dir", str(run_dir)], ["ckpt", "show", str(run_dir / "egg.ckpt.0")]):
        result = CliRunner().invoke(cli.main, args)
        assert result.exit_code == 0 and result.exception is None, (args, result.output, result.exception)
    shutil.rmtree(run_dir)
