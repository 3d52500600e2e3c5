"""Tests of the checkpoint format, run directories, locking and export (checkpoint.py, run_dir.py, export.py)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from mlm.egg import checkpoint as ck
from mlm.egg.checkpoint import (
    Checkpoint,
    CheckpointError,
    decode,
    encode,
    read_checkpoint,
    write_checkpoint,
)
from mlm.egg.config import LEGACY_VALUES, PRESETS
from mlm.egg.export import export_weights
from mlm.egg.run_dir import NoCheckpointError, RunDir
from mlm.env import TEST_KILL_DURING_SAVE
from mlm.errors import MlmError

REPO_ROOT = Path(__file__).resolve().parents[1]
N_WEIGHTS = 300
N_STATE = 40
RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def make_ckpt(step: int = 1, seed: int = 0, **changes: object) -> Checkpoint:
    """A small checkpoint with pseudo-random arrays; ``changes`` override fields."""
    rng = np.random.default_rng(seed + 1000 * step)
    values: dict[str, object] = {
        "config": PRESETS["tiny"],
        "step": step,
        "run_seed": 12345,
        "data_cursor": 678,
        "weights": rng.integers(-127, 128, N_WEIGHTS, dtype=np.int8),
        "state": rng.integers(-127, 128, N_STATE, dtype=np.int8),
        "metrics": {"train_loss": 3.0 - step / 100, "val_bpb": None, "best_metric": 3.0 - step / 100},
        "created": 1_700_000_000.0 + step,
        "extra": {"data_sha256": "ab" * 32},
    }
    values.update(changes)
    return Checkpoint(**values)  # type: ignore[arg-type]


def sizes_of_tiny(config: object) -> tuple[int, int]:
    """Stand-in for the C core's layout: every tiny model has N_WEIGHTS weights and N_STATE state bytes."""
    return N_WEIGHTS, N_STATE


def craft(header: bytes, payload: bytes, version: int = 1) -> bytes:
    """A file with the given raw header and payload and a *valid* checksum."""
    body = struct.pack("<8sII", ck.MAGIC, version, len(header)) + header + payload
    return body + hashlib.sha256(body).digest()


def valid_header(ckpt: Checkpoint) -> dict[str, object]:
    """The JSON header ``encode`` writes for ``ckpt``."""
    data = encode(ckpt)
    (header_len,) = struct.unpack_from("<I", data, 12)
    return json.loads(data[16:16 + header_len])


def payload_of(ckpt: Checkpoint) -> bytes:
    return ckpt.weights.tobytes() + ckpt.state.tobytes()


def run_python(code: str, *args: str, env: dict[str, str] | None = None, **popen: object) -> subprocess.Popen:
    """Start a Python child that can import mlm from this checkout."""
    child_env = dict(os.environ, **(env or {}))
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-c", code, *args], env=child_env, **popen)  # type: ignore[call-overload]


def slot_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("egg.ckpt."))


# ---------------------------------------------------------------------------------------------
# The Checkpoint object and the file format


def test_round_trip_bytes_and_file(tmp_path: Path) -> None:
    ckpt = make_ckpt(step=7, run_seed=2**64 - 1, data_cursor=-(2**63), extra={"note": "Grüße", "n": [1, 2]})
    assert decode(encode(ckpt)) == ckpt
    path = write_checkpoint(ckpt, tmp_path / "one.ckpt")
    loaded = read_checkpoint(path, sizes_of_tiny)
    assert loaded == ckpt
    assert loaded.weights.flags.writeable and loaded.weights.dtype == np.int8
    assert loaded.weights_sha256() == hashlib.sha256(ckpt.weights.tobytes()).hexdigest()
    assert loaded != make_ckpt(step=7)


def test_file_layout_matches_the_documentation() -> None:
    ckpt = make_ckpt()
    data = encode(ckpt)
    magic, version, header_len = struct.unpack_from("<8sII", data)
    assert (magic, version) == (b"\x89MLMEGG\n", 1)
    header = json.loads(data[16:16 + header_len].decode("utf-8"))
    assert (header["n_weights"], header["n_state"]) == (N_WEIGHTS, N_STATE)
    weights_at = 16 + header_len
    assert data[weights_at:weights_at + N_WEIGHTS] == ckpt.weights.tobytes()
    assert data[weights_at + N_WEIGHTS:-32] == ckpt.state.tobytes()
    assert data[-32:] == hashlib.sha256(data[:-32]).digest()


def test_fields_are_normalised() -> None:
    ckpt = make_ckpt(metrics={"val_bpb": np.int32(2)}, step=np.int64(3), created=5)
    assert ckpt.metrics == {"train_loss": None, "val_bpb": 2.0, "best_metric": None}
    assert type(ckpt.step) is int and type(ckpt.created) is float
    assert decode(encode(ckpt)) == ckpt
    assert make_ckpt(best_metric_name="val_bpb", metrics={"val_bpb": 1.5}).tracked_metric == 1.5


@pytest.mark.parametrize("changes", [
    {"weights": np.zeros(3, np.float32)},
    {"weights": np.zeros((2, 2), np.int8)},
    {"state": [1, 2]},
    {"metrics": {"train_loss": float("nan")}},
    {"metrics": {"loss": 1.0}},
    {"best_metric_name": "accuracy"},
    {"step": -1},
    {"step": True},
    {"run_seed": 2**64},
    {"created": float("inf")},
])
def test_invalid_fields_are_rejected(changes: dict[str, object]) -> None:
    with pytest.raises((TypeError, ValueError)):
        make_ckpt(**changes)


# ---------------------------------------------------------------------------------------------
# Damaged files


def test_every_truncation_is_reported_as_truncated() -> None:
    data = encode(make_ckpt())
    for length in range(len(data)):
        with pytest.raises(CheckpointError) as caught:
            decode(data[:length])
        assert caught.value.reason == "truncated", length


def test_every_flipped_byte_is_detected() -> None:
    data = encode(make_ckpt())
    (header_len,) = struct.unpack_from("<I", data, 12)
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        with pytest.raises(CheckpointError) as caught:
            decode(bytes(damaged))
        reason = caught.value.reason
        if position < 8:
            assert reason == "wrong magic"
        elif position < 12:
            # The checksum is checked before the version: a flipped version bit is damage, not a newer mlm.
            assert reason == "checksum mismatch", position
        elif position < 16 + header_len:
            # A damaged length or size field can make the file look short.
            assert reason in ("checksum mismatch", "truncated"), position
        else:
            assert reason == "checksum mismatch", position


def damaged_files() -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, expected reason); every header case has a valid checksum."""
    ckpt = make_ckpt(step=9)
    good = encode(ckpt)
    header = valid_header(ckpt)
    payload = payload_of(ckpt)

    def with_header(**changes: object) -> bytes:
        return craft(json.dumps({**header, **changes}).encode(), payload)

    missing_step = {k: v for k, v in header.items() if k != "step"}
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    return {
        "truncated": (good[:-100], "truncated"),
        "flipped byte": (bytes(flipped), "checksum mismatch"),
        "appended bytes": (good + b"\0", "checksum mismatch"),
        "wrong magic": (b"PK\x03\x04" + good[4:], "wrong magic"),
        "text file": (b"hello, world\n", "wrong magic"),
        "empty": (b"", "truncated"),
        "future version": (craft(json.dumps(header).encode(), payload, version=7),
                           "format version 7 is newer than this mlm (1)"),
        "version zero": (craft(json.dumps(header).encode(), payload, version=0), "unknown format version 0"),
        "garbage json": (craft(b"{not json at all", payload), "invalid header"),
        "invalid utf-8": (craft(b'{"step": "\xff"}', payload), "invalid header"),
        "json array": (craft(b"[1, 2, 3]", payload), "invalid header"),
        "json NaN": (with_header(created=float("nan")), "invalid header"),
        "duplicate key": (craft(json.dumps(header)[:-1].encode() + b',"step":3}', payload), "invalid header"),
        "missing field": (craft(json.dumps(missing_step).encode(), payload), "invalid header"),
        "boolean step": (with_header(step=True), "invalid header"),
        "string size": (with_header(n_weights="300"), "invalid header"),
        "bad metric": (with_header(metrics={"train_loss": "low"}), "invalid header"),
        "infinite metric": (with_header(metrics={"train_loss": 1e999}), "invalid header"),
        "bad extra": (with_header(extra=[1]), "invalid header"),
        "sizes disagree": (with_header(n_weights=N_WEIGHTS + 1), "size mismatch"),
        "invalid config": (with_header(config={**header["config"], "hidden": 17}), "invalid configuration"),
        "unknown config field": (with_header(config={**header["config"], "x": 3}), "invalid configuration"),
        "string config": (with_header(config={**header["config"], "hidden": "32"}), "invalid configuration"),
        "another model size": (encode(make_ckpt(step=9, weights=np.zeros(N_WEIGHTS + 16, np.int8))),
                               "another model size"),
    }


DAMAGED = damaged_files()


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_file_is_reported_skipped_and_refused(tmp_path: Path, name: str) -> None:
    data, reason = DAMAGED[name]
    run = RunDir(tmp_path, expected_sizes=sizes_of_tiny)
    run.save(make_ckpt(step=5))
    (tmp_path / "egg.ckpt.1").write_bytes(data)

    by_name = {info.name: info for info in run.scan()}
    assert (by_name["egg.ckpt.1"].exists, by_name["egg.ckpt.1"].valid) == (True, False)
    assert by_name["egg.ckpt.1"].reason == reason

    latest = run.latest()
    assert latest is not None and latest.step == 5
    assert [(p.name, p.reason) for p in run.problems] == [("egg.ckpt.1", reason)]

    for spec in ("1", str(tmp_path / "egg.ckpt.1"), "egg.ckpt.1"):
        with pytest.raises(CheckpointError) as caught:
            run.resolve(spec)
        assert caught.value.reason == reason
        assert str(tmp_path / "egg.ckpt.1") in str(caught.value)

    # The next save goes after the highest *valid* step, never building on a damaged file.
    assert run.save(make_ckpt(step=6)).name == "egg.ckpt.1"


def test_future_version_message_says_newer_mlm() -> None:
    with pytest.raises(CheckpointError, match="newer mlm"):
        decode(DAMAGED["future version"][0], "x.ckpt")


def test_config_predating_new_fields_keeps_the_rule_it_started_with() -> None:
    """A file written before fitness_levels, vote_memory etc. existed resumes with the old update rule."""
    ckpt = make_ckpt()
    header = valid_header(ckpt)
    for key in LEGACY_VALUES:
        del header["config"][key]
    old = decode(craft(json.dumps(header).encode(), payload_of(ckpt)), "old.ckpt")
    assert {key: getattr(old.config, key) for key in LEGACY_VALUES} == LEGACY_VALUES
    assert old.config.replace(**{key: getattr(ckpt.config, key) for key in LEGACY_VALUES}) == ckpt.config


def test_expected_sizes_errors_become_checkpoint_errors() -> None:
    def refuse(config: object) -> tuple[int, int]:
        raise MlmError("hidden 32 is not supported by this build")

    with pytest.raises(CheckpointError) as caught:
        decode(encode(make_ckpt()), expected_sizes=refuse)
    assert caught.value.reason == "unsupported configuration"


mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 16)),
)


def mutate(data: bytes, operations: list[tuple]) -> bytes:
    """Apply set / truncate / insert / delete operations at positions taken modulo the length."""
    out = bytearray(data)
    for operation in operations:
        at = operation[1] % (len(out) + 1)
        if operation[0] == "set" and at < len(out):
            out[at] = operation[2]
        elif operation[0] == "truncate":
            del out[at:]
        elif operation[0] == "insert":
            out[at:at] = operation[2]
        elif operation[0] == "delete":
            del out[at:at + operation[2]]
    return bytes(out)


ORIGINAL = make_ckpt(step=3)
ORIGINAL_BYTES = encode(ORIGINAL)


@settings(max_examples=400, deadline=None)
@given(st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_reader_fails_cleanly_or_returns_the_original(operations: list[tuple]) -> None:
    data = mutate(ORIGINAL_BYTES, operations)
    try:
        loaded = decode(data, expected_sizes=sizes_of_tiny)
    except CheckpointError:
        return
    assert data == ORIGINAL_BYTES
    assert loaded == ORIGINAL


@settings(max_examples=300, deadline=None)
@given(st.lists(mutation, min_size=1, max_size=3))
def test_fuzz_header_with_valid_checksum_raises_only_checkpoint_error(operations: list[tuple]) -> None:
    header = json.dumps(valid_header(ORIGINAL)).encode()
    data = craft(mutate(header, operations), payload_of(ORIGINAL))
    with contextlib.suppress(CheckpointError):
        decode(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes_raise_only_checkpoint_error(data: bytes) -> None:
    with pytest.raises(CheckpointError):
        decode(ck.MAGIC + data)


# ---------------------------------------------------------------------------------------------
# The ring, best, resolve


def test_ring_rotation_keeps_ten_slots_and_latest_wins(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    names = [run.save(make_ckpt(step=step)).name for step in range(1, 13)]
    assert names[:10] == [f"egg.ckpt.{i}" for i in range(10)]
    assert names[10:] == ["egg.ckpt.0", "egg.ckpt.1"]
    assert slot_files(tmp_path / "run") == sorted(f"egg.ckpt.{i}" for i in range(10))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == slot_files(tmp_path / "run")
    latest = run.latest()
    assert latest == make_ckpt(step=12)
    steps = {info.name: info.step for info in run.scan()}
    assert steps["egg.ckpt.1"] == 12 and steps["egg.ckpt.2"] == 3 and steps["egg.ckpt.best"] is None


def test_save_follows_the_highest_valid_step_not_the_slot_number(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    write_checkpoint(make_ckpt(step=50), tmp_path / "egg.ckpt.4")
    write_checkpoint(make_ckpt(step=20), tmp_path / "egg.ckpt.7")
    assert run.save(make_ckpt(step=51)).name == "egg.ckpt.5"
    write_checkpoint(make_ckpt(step=60), tmp_path / "egg.ckpt.9")
    assert run.save(make_ckpt(step=61)).name == "egg.ckpt.0"


def test_latest_ties_on_step_go_to_the_newest(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    write_checkpoint(make_ckpt(step=5, created=200.0, data_cursor=2), tmp_path / "egg.ckpt.2")
    write_checkpoint(make_ckpt(step=5, created=100.0, data_cursor=1), tmp_path / "egg.ckpt.8")
    latest = run.latest()
    assert latest is not None and latest.data_cursor == 2
    assert run.save(make_ckpt(step=6)).name == "egg.ckpt.3"


def test_latest_falls_back_to_best_when_the_ring_is_unusable(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    (tmp_path / "egg.ckpt.0").write_bytes(b"junk")
    assert run.latest() is None
    run.save_best(make_ckpt(step=4))
    latest = run.latest()
    assert latest is not None and latest.step == 4
    assert [p.name for p in run.problems] == ["egg.ckpt.0"]


def test_best_is_rewritten_only_on_strict_improvement(tmp_path: Path) -> None:
    run = RunDir(tmp_path)

    def loss(value: float | None, step: int, name: str = "train_loss") -> Checkpoint:
        return make_ckpt(step=step, best_metric_name=name, metrics={name: value, "best_metric": value})

    assert run.save_best(loss(None, 1)) is False
    assert not run.best_path.exists()
    assert run.save_best(loss(3.0, 2)) is True
    assert run.save_best(loss(3.0, 3)) is False
    assert run.save_best(loss(3.5, 4)) is False
    assert run.save_best(loss(2.9, 5)) is True
    best = run.best()
    assert best is not None and best.step == 5
    # Validation turned on: a different metric is not comparable, the new one takes over.
    assert run.save_best(loss(4.0, 6, "val_bpb")) is True
    assert run.save_best(loss(4.1, 7, "val_bpb")) is False
    # A damaged best is replaced, and reported meanwhile.
    run.best_path.write_bytes(run.best_path.read_bytes()[:-1])
    assert run.best() is None and run.problems[0].reason == "truncated"
    assert run.save_best(loss(9.0, 8)) is True
    assert run.resolve("best").step == 8


def test_resolve_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunDir(tmp_path / "run")
    with pytest.raises(NoCheckpointError, match=r"python -m mlm\.egg train --run-dir"):
        run.resolve("latest")
    with pytest.raises(NoCheckpointError):
        run.resolve("best")
    for step in (1, 2, 3):
        run.save(make_ckpt(step=step))
    run.save_best(make_ckpt(step=2))
    assert run.resolve("latest").step == 3
    assert run.resolve("best").step == 2
    assert run.resolve("0").step == 1
    assert run.resolve(str(tmp_path / "run" / "egg.ckpt.1")).step == 2
    monkeypatch.chdir(tmp_path)
    assert run.resolve("run/egg.ckpt.2").step == 3
    assert run.resolve("egg.ckpt.best").step == 2
    refused = {"7": "missing", "10": "missing", "nowhere.ckpt": "missing", ".": "not a file"}
    for spec, reason in refused.items():
        with pytest.raises(CheckpointError) as caught:
            run.resolve(spec)
        assert caught.value.reason == reason, spec


def test_resolve_latest_with_only_damaged_files(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    (tmp_path / "egg.ckpt.0").write_bytes(b"junk")
    assert run.has_checkpoints()
    with pytest.raises(CheckpointError, match=r"egg\.ckpt\.0: wrong magic.*--fresh"):
        run.resolve("latest")


def test_has_checkpoints(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "absent")
    assert not run.has_checkpoints()
    assert run.latest() is None and run.best() is None
    run.save_best(make_ckpt())
    assert run.has_checkpoints()


# ---------------------------------------------------------------------------------------------
# Failures while writing


@pytest.mark.parametrize("function", ["write", "fsync"])
def test_disk_full_keeps_earlier_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             function: str) -> None:
    run = RunDir(tmp_path)
    run.save(make_ckpt(step=1))

    def no_space(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(os, function, no_space)
        with pytest.raises(CheckpointError) as caught:
            run.save(make_ckpt(step=2))
    assert caught.value.reason == "disk full"
    assert "intact" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["egg.ckpt.0"]
    assert run.latest() == make_ckpt(step=1)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_unwritable_directory_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    run = RunDir(tmp_path)
    run.save(make_ckpt(step=1))
    real_open = os.open

    def refuse_temp_files(path: object, *args: object, **kwargs: object) -> int:
        if ".tmp-" in str(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as patch:
        patch.setattr(os, "open", refuse_temp_files)
        with pytest.raises(CheckpointError) as caught:
            run.save_best(make_ckpt(step=2))
    assert caught.value.reason == "directory not writable"
    assert "intact" in str(caught.value) and str(tmp_path) in str(caught.value)
    assert run.latest() == make_ckpt(step=1)


@pytest.mark.skipif(RUNNING_AS_ROOT, reason="root ignores directory permissions (simulated above)")
def test_read_only_directory(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.save(make_ckpt(step=1))
    (tmp_path / "run").chmod(0o555)
    try:
        with pytest.raises(CheckpointError) as caught:
            run.save(make_ckpt(step=2))
        assert caught.value.reason == "directory not writable"
        with pytest.raises(MlmError, match="not writable"), run.lock():
            pass
    finally:
        (tmp_path / "run").chmod(0o755)
    assert run.latest() == make_ckpt(step=1)


def test_run_directory_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    run = RunDir(tmp_path / "file" / "run")
    with pytest.raises(MlmError, match=r"cannot create run directory .*file/run"):
        run.save(make_ckpt())
    with pytest.raises(MlmError, match="--run-dir"), run.lock():
        pass


KILLED_WRITER = """
import sys
import numpy as np
from mlm.egg.checkpoint import Checkpoint
from mlm.egg.run_dir import RunDir
from mlm.egg.config import LEGACY_VALUES, PRESETS
weights = np.full(200_000, 7, np.int8)
RunDir(sys.argv[1]).save(Checkpoint(PRESETS["tiny"], 99, 1, 0, weights, np.zeros(10, np.int8)))
"""


def test_kill_during_save_leaves_earlier_slots_intact(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    originals = {step: make_ckpt(step=step) for step in range(1, 11)}
    for ckpt in originals.values():
        run.save(ckpt)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    child = run_python(KILLED_WRITER, str(tmp_path), env={TEST_KILL_DURING_SAVE: "1"})
    assert child.wait(timeout=60) == -signal.SIGKILL

    temp = tmp_path / f".egg.ckpt.0.tmp-{child.pid}"  # the ring was full: slot 0 was being replaced
    assert temp.exists() and 0 < temp.stat().st_size < 200_000
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p != temp} == before
    assert all(info.valid for info in run.scan() if info.slot is not None)
    assert run.latest() == originals[10]
    with run.lock():
        assert not temp.exists()


# ---------------------------------------------------------------------------------------------
# Locking


LOCK_HOLDER = """
import sys, time
from mlm.egg.run_dir import RunDir
with RunDir(sys.argv[1]).lock():
    print("locked", flush=True)
    time.sleep(120)
"""


def test_second_holder_is_refused_and_a_killed_holder_does_not_block(tmp_path: Path) -> None:
    child = run_python(LOCK_HOLDER, str(tmp_path), stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        started = time.monotonic()
        refused = rf"another mlm train is already using .* \(pid {child.pid} on host"
        with pytest.raises(MlmError, match=refused), RunDir(tmp_path).lock():
            pass
        assert time.monotonic() - started < 2
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    with RunDir(tmp_path).lock():
        owner = json.loads((tmp_path / ".lock.owner").read_text())
        assert owner["pid"] == os.getpid()
    assert not (tmp_path / ".lock.owner").exists()


def test_lock_in_one_process_excludes_another_run_dir_object(tmp_path: Path) -> None:
    refused = rf"\(pid {os.getpid()} on host"
    with RunDir(tmp_path).lock(), pytest.raises(MlmError, match=refused), RunDir(tmp_path).lock():
        pass
    with RunDir(tmp_path).lock():
        pass


def test_temp_files_are_ignored_and_cleaned_when_locked(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.save(make_ckpt(step=1))
    leftover = tmp_path / ".egg.ckpt.1.tmp-999999"
    leftover.write_bytes(encode(make_ckpt(step=2))[:100])
    assert [info.name for info in run.scan() if info.exists] == ["egg.ckpt.0"]
    assert run.latest() == make_ckpt(step=1)
    with run.lock():
        assert not leftover.exists()
    assert (tmp_path / "egg.ckpt.0").exists()


# ---------------------------------------------------------------------------------------------
# Archiving and export


def test_archive_existing_moves_and_never_deletes(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    for step in (1, 2):
        run.save(make_ckpt(step=step))
    run.save_best(make_ckpt(step=2))
    (tmp_path / "egg.ckpt.5").write_bytes(b"damaged too")
    (tmp_path / "training.log").write_text("step 1\n")
    (tmp_path / "results.tsv").write_text("kept\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    archive = run.archive_existing()
    assert archive.parent == tmp_path and archive.name.startswith("old-")
    moved = {p.name: p.read_bytes() for p in archive.iterdir()}
    assert moved == {k: v for k, v in before.items() if k != "results.tsv"}
    assert not run.has_checkpoints() and not (tmp_path / "training.log").exists()
    assert (tmp_path / "results.tsv").read_text() == "kept\n"

    run.save(make_ckpt(step=1))
    second = run.archive_existing()
    assert second != archive and (second / "egg.ckpt.0").exists()
    assert moved == {p.name: p.read_bytes() for p in archive.iterdir()}


TENSORS = [("embed", 10, 20, 0), ("norm", 1, 20, 200), ("head", 4, 20, 220)]


def test_export_safetensors(tmp_path: Path) -> None:
    ckpt = make_ckpt(step=42)
    out = export_weights(ckpt, tmp_path / "model.safetensors", TENSORS)
    tensors = safetensors.numpy.load_file(str(out))
    assert tensors["embed"].shape == (10, 20) and tensors["embed"].dtype == np.int8
    assert np.array_equal(tensors["embed"].ravel(), ckpt.weights[:200])
    assert tensors["norm"].shape == (20,) and np.array_equal(tensors["norm"], ckpt.weights[200:220])
    assert np.array_equal(tensors["head"].ravel(), ckpt.weights[220:300])
    with safetensors.safe_open(str(out), framework="numpy") as file:
        metadata = file.metadata()
    assert json.loads(metadata["mlm_config"]) == ckpt.config.to_dict()
    assert metadata["step"] == "42"


def test_export_npz(tmp_path: Path) -> None:
    ckpt = make_ckpt()
    out = export_weights(ckpt, tmp_path / "model.npz", TENSORS)
    with np.load(out) as archive:
        assert json.loads(str(archive["__config__"])) == ckpt.config.to_dict()
        assert archive["norm"].shape == (20,)
        assert np.array_equal(archive["head"], ckpt.weights[220:300].reshape(4, 20))


def test_export_rejects_bad_requests(tmp_path: Path) -> None:
    with pytest.raises(MlmError, match=r"\.safetensors or \.npz"):
        export_weights(make_ckpt(), tmp_path / "model.bin", TENSORS)
    with pytest.raises(ValueError, match="does not fit"):
        export_weights(make_ckpt(), tmp_path / "model.npz", [("big", 20, 20, 0)])
    with pytest.raises(MlmError, match="cannot write"):
        export_weights(make_ckpt(), tmp_path / "missing" / "model.npz", TENSORS)
