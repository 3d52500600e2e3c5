"""Checkpoint files (format v1) and run directories (a ring of 10 slots plus ``best``).

A checkpoint holds everything a training run needs to continue bit-identically: the
configuration, the step counter, the run seed, the data cursor, the model weights and the
population's recurrent state (both flat int8 buffers whose layout belongs to the C core), and
the metrics that decide which checkpoint is "best". The byte layout is documented in
``docs/checkpoint-format.md``; keep the two in step.

Files are written atomically (temporary file, fsync, rename, fsync of the directory), so a
crash at any instant leaves every earlier checkpoint intact, and every read verifies a SHA-256
over the whole file, so a damaged file is reported and never silently used.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import hashlib
import io
import itertools
import json
import math
import os
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock
import numpy as np
import safetensors.numpy

from mlm import __version__
from mlm.egg.config import ModelConfig
from mlm.errors import MlmError

MAGIC = b"\x89MLMEGG\n"
FORMAT_VERSION = 1
#: magic, then uint32 format version and uint32 header length, little-endian.
PREFIX = struct.Struct("<8sII")
DIGEST_SIZE = 32
METRIC_KEYS = ("train_loss", "val_bpb", "best_metric")
#: The fields of :class:`Checkpoint` stored in the JSON header (besides the array sizes).
HEADER_KEYS = ("config", "step", "run_seed", "data_cursor", "metrics", "best_metric_name", "created", "extra")
BEST_METRIC_NAMES = ("val_bpb", "train_loss")
#: Bits per byte can never exceed this: the loss of a byte is at most log2(256) + 2 * 127/16 < 24.
MAX_BITS_PER_BYTE = 24.0
#: ``created`` is a unix time between 1970 and the year 9999 (what time.localtime can show).
MAX_CREATED = 253402300799.0
#: ``extra`` entries the readers use, with their type.
EXTRA_TYPES = {"data_sha256": str, "data_path": str}
#: Configuration fields a run fixes by itself while it runs (a time-budgeted run fixes its cooldown after
#: its first steps): files of one run may differ in them, so they are no part of the run's identity.
SCHEDULE_FIELDS = ("cooldown_start", "cooldown_end")
RING_SIZE = 10
SLOT_PREFIX = "egg.ckpt."
BEST_NAME = "egg.ckpt.best"
LOG_NAME = "training.log"
LOCK_NAME = ".lock"
LOCK_OWNER_NAME = ".lock.owner"
#: Test hook: SIGKILL the writer halfway through a temporary file (see tests/test_checkpoint.py).
#: Test hook: ``N`` makes the N-th checkpoint file this process writes SIGKILL itself halfway through.
KILL_DURING_SAVE_ENV = "MLM_TEST_KILL_DURING_SAVE"
_write_counter = itertools.count(1)

ExpectedSizes = Callable[[ModelConfig], tuple[int, int]]

_DAMAGED_FIX = "the file is damaged: resume from another checkpoint or delete it"


class CheckpointError(MlmError):
    """A checkpoint file cannot be read or written; ``reason`` is a short label such as ``"truncated"``."""

    def __init__(self, path: Path | str, reason: str, fix: str, detail: str | None = None) -> None:
        self.path = Path(path)
        self.reason = reason
        self.fix = fix
        what = f"{reason} ({detail})" if detail else reason
        super().__init__(f"checkpoint {path}: {what}; {fix}")


class NoCheckpointError(MlmError):
    """A run directory holds no checkpoint at all: nothing has been trained there yet."""


@dataclass(eq=False)
class Checkpoint:
    """Everything a training run needs to continue exactly where it stopped."""

    config: ModelConfig
    #: Number of completed training steps.
    step: int
    run_seed: int
    #: Position in the training data; its meaning belongs to the data loader.
    data_cursor: int
    weights: np.ndarray
    #: Every recurrent state the next step needs, as laid out by the C core.
    state: np.ndarray
    #: ``train_loss`` and ``val_bpb`` at this step, ``best_metric`` the best value of the tracked
    #: metric seen so far in the run; each a float or None.
    metrics: dict[str, float | None] = field(default_factory=dict)
    #: Which metric decides "best": ``val_bpb`` when validation runs, else ``train_loss``.
    best_metric_name: str = "train_loss"
    created: float = field(default_factory=time.time)
    #: Small JSON-able facts about the run (e.g. the training data's sha256); comes back as JSON types.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check types and ranges so a bad checkpoint fails here, not when it is written or read."""
        if not isinstance(self.config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, not {type(self.config).__name__}")
        self.step = _as_int("step", self.step, 0, 2**63 - 1)
        self.run_seed = _as_int("run_seed", self.run_seed, 0, 2**64 - 1)
        self.data_cursor = _as_int("data_cursor", self.data_cursor, -(2**63), 2**63 - 1)
        for name in ("weights", "state"):
            array = getattr(self, name)
            if not isinstance(array, np.ndarray) or array.dtype != np.int8 or array.ndim != 1:
                raise TypeError(f"{name} must be a 1-D int8 numpy array")
        unknown = set(self.metrics) - set(METRIC_KEYS)
        if unknown:
            raise ValueError(f"unknown metrics: {', '.join(sorted(unknown))}")
        self.metrics = {key: _metric_value(key, self.metrics.get(key)) for key in METRIC_KEYS}
        if self.best_metric_name not in BEST_METRIC_NAMES:
            raise ValueError(f"best_metric_name must be one of {BEST_METRIC_NAMES} "
                             f"(got {self.best_metric_name!r})")
        if isinstance(self.created, bool) or not isinstance(self.created, (int, float)):
            raise TypeError("created must be a unix time in seconds")
        if not (math.isfinite(self.created) and 0 <= self.created <= MAX_CREATED):
            raise ValueError(f"created must be a unix time between 1970 and 9999 (got {self.created!r})")
        self.created = float(self.created)
        if not isinstance(self.extra, dict):
            raise TypeError("extra must be a dict")
        for key, kind in EXTRA_TYPES.items():
            if key in self.extra and not isinstance(self.extra[key], kind):
                raise TypeError(f"extra {key} must be a {kind.__name__} (got {self.extra[key]!r})")

    @property
    def identity(self) -> tuple:
        """What makes two files the same run: the configuration (but for SCHEDULE_FIELDS) and the run seed."""
        return run_identity(self.config, self.run_seed)

    def __eq__(self, other: object) -> bool:
        """Equal when every field is equal, arrays compared element by element."""
        if not isinstance(other, Checkpoint):
            return NotImplemented
        return (
            _header_fields(self) == _header_fields(other)
            and _same_array(self.weights, other.weights)
            and _same_array(self.state, other.state)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like the arrays it holds

    def weights_sha256(self) -> str:
        """Hex SHA-256 of the weight bytes: identifies a model independently of its step and state."""
        return hashlib.sha256(np.ascontiguousarray(self.weights).tobytes()).hexdigest()

    def state_sha256(self) -> str:
        """Hex SHA-256 of the recurrent-state bytes: with the weights, what a resumed run must reproduce."""
        return hashlib.sha256(np.ascontiguousarray(self.state).tobytes()).hexdigest()

    @property
    def tracked_metric(self) -> float | None:
        """The current value of the metric named by ``best_metric_name``."""
        return self.metrics[self.best_metric_name]


def _as_int(name: str, value: object, low: int, high: int) -> int:
    """``value`` as a Python int (numpy integers welcome, bools not); ValueError outside [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer between {low} and {high} (got {value!r})")
    return int(value)


def _metric_value(name: str, value: object) -> float | None:
    """Normalise a metric to a finite float or None (JSON has no NaN, and NaN never compares as better)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"metric {name} must be a number or None (got {value!r})")
    if not math.isfinite(value):
        raise ValueError(f"metric {name} must be finite (got {value!r})")
    if not 0 <= value <= MAX_BITS_PER_BYTE:
        raise ValueError(f"metric {name} must be between 0 and {MAX_BITS_PER_BYTE:g} bits per byte (got {value!r})")
    return float(value)


def run_identity(config: ModelConfig, run_seed: int) -> tuple:
    """See :attr:`Checkpoint.identity`."""
    return tuple((k, v) for k, v in config.to_dict().items() if k not in SCHEDULE_FIELDS) + (("run_seed", run_seed),)


def identity_difference(mine: tuple, theirs: tuple) -> str:
    """The fields in which two run identities differ: ``hidden 64 (run: 32), run_seed 2 (run: 1)``."""
    ours = dict(theirs)
    return ", ".join(f"{k} {v} (run: {ours.get(k)})" for k, v in mine if ours.get(k) != v)


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))


def _header_fields(ckpt: Checkpoint) -> dict[str, Any]:
    """The scalar part of a checkpoint, as stored in the JSON header (without array sizes)."""
    return {
        "config": ckpt.config.to_dict(),
        "step": ckpt.step,
        "run_seed": ckpt.run_seed,
        "data_cursor": ckpt.data_cursor,
        "metrics": dict(ckpt.metrics),
        "best_metric_name": ckpt.best_metric_name,
        "created": ckpt.created,
        "extra": ckpt.extra,
    }


# ---------------------------------------------------------------------------------------------
# Encoding and decoding


def encode(ckpt: Checkpoint) -> bytes:
    """Serialise a checkpoint to the bytes of a format-v1 file."""
    header = _header_fields(ckpt)
    header.update(n_weights=ckpt.weights.size, n_state=ckpt.state.size, written_by=f"mlm {__version__}")
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
    body = b"".join([
        PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes)),
        header_bytes,
        np.ascontiguousarray(ckpt.weights).tobytes(),
        np.ascontiguousarray(ckpt.state).tobytes(),
    ])
    return body + hashlib.sha256(body).digest()


def decode(
    data: bytes, source: Path | str = "<bytes>", expected_sizes: ExpectedSizes | None = None
) -> Checkpoint:
    """Parse and verify the bytes of a checkpoint file; raise :class:`CheckpointError` naming ``source``.

    ``expected_sizes(config) -> (n_weights, n_state)`` lets the caller (who knows the C core's
    layout) reject a checkpoint whose arrays do not fit the model its configuration describes.
    """
    # Checksum first: a flipped bit in the version field is damage, not a file from a newer mlm.
    _check_magic(data, source)
    _, version, header_len = PREFIX.unpack_from(data)
    header_end = PREFIX.size + header_len
    if hashlib.sha256(memoryview(data)[:-DIGEST_SIZE]).digest() != data[-DIGEST_SIZE:]:
        raise _damage_error(data, header_end, source)
    _check_version(version, source)
    header = _parse_header(data[PREFIX.size:header_end], source)
    n_weights, n_state = header["n_weights"], header["n_state"]
    array_bytes = len(data) - header_end - DIGEST_SIZE
    if n_weights + n_state != array_bytes:
        raise CheckpointError(source, "size mismatch", _DAMAGED_FIX,
                              f"header claims {n_weights}+{n_state} array bytes, file holds {array_bytes}")
    config = _parse_config(header["config"], source)
    weights = np.frombuffer(data, np.int8, n_weights, header_end).copy()
    state = np.frombuffer(data, np.int8, n_state, header_end + n_weights).copy()
    try:
        ckpt = Checkpoint(config=config, weights=weights, state=state,
                          **{key: header[key] for key in HEADER_KEYS if key != "config"})
    except (TypeError, ValueError) as error:
        raise CheckpointError(source, "invalid header", _DAMAGED_FIX, str(error)) from None
    if expected_sizes is not None:
        _check_expected_sizes(ckpt, expected_sizes, source)
    return ckpt


def _check_magic(data: bytes, source: Path | str) -> None:
    """Check the magic and that the file can hold a prefix and a checksum."""
    if data[:len(MAGIC)] != MAGIC[:len(data)]:
        raise CheckpointError(source, "wrong magic", "this is not an mlm checkpoint file")
    if len(data) < PREFIX.size + DIGEST_SIZE:
        raise CheckpointError(source, "truncated", _DAMAGED_FIX, f"only {len(data)} bytes")


def _check_version(version: int, source: Path | str) -> None:
    """Only after the checksum passed: a version this mlm cannot read."""
    if version > FORMAT_VERSION:
        raise CheckpointError(source, f"format version {version} is newer than this mlm ({FORMAT_VERSION})",
                              "it was written by a newer mlm: upgrade mlm (pip install -U mlm) to read it")
    if version != FORMAT_VERSION:
        raise CheckpointError(source, f"unknown format version {version}", _DAMAGED_FIX)


def _damage_error(data: bytes, header_end: int, source: Path | str) -> CheckpointError:
    """Tell a truncated file (its header promises more bytes than exist) from other damage."""
    if header_end + DIGEST_SIZE > len(data):
        return CheckpointError(source, "truncated", _DAMAGED_FIX,
                               f"header of {header_end - PREFIX.size} bytes does not fit in {len(data)} bytes")
    try:
        header = json.loads(data[PREFIX.size:header_end])
        wanted = header_end + int(header["n_weights"]) + int(header["n_state"]) + DIGEST_SIZE
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError):
        wanted = 0
    if wanted > len(data):
        return CheckpointError(source, "truncated", _DAMAGED_FIX, f"{len(data)} of {wanted} bytes")
    return CheckpointError(source, "checksum mismatch", _DAMAGED_FIX)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def _parse_header(raw: bytes, source: Path | str) -> dict[str, Any]:
    """Decode the JSON header and check the presence and type of every field the reader uses.

    Keys the reader does not know are ignored: a newer mlm may add facts without a new version.
    """
    try:
        text = raw.decode("utf-8")
        header = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CheckpointError(source, "invalid header", _DAMAGED_FIX, f"not valid JSON: {error}") from None
    if not isinstance(header, dict):
        raise CheckpointError(source, "invalid header", _DAMAGED_FIX, "not a JSON object")
    missing = [key for key in (*HEADER_KEYS, "n_weights", "n_state") if key not in header]
    if missing:
        raise CheckpointError(source, "invalid header", _DAMAGED_FIX, f"missing {', '.join(missing)}")
    try:
        for key in ("n_weights", "n_state"):
            _as_int(key, header[key], 0, 2**63 - 1)
    except ValueError as error:
        raise CheckpointError(source, "invalid header", _DAMAGED_FIX, str(error)) from None
    if not isinstance(header["metrics"], dict):
        raise CheckpointError(source, "invalid header", _DAMAGED_FIX, "metrics is not an object")
    return header


def _parse_config(values: object, source: Path | str) -> ModelConfig:
    """Build and validate the stored configuration."""
    fix = "it was written by another mlm version or is damaged: use another checkpoint, or upgrade mlm"
    if not isinstance(values, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in values.values()
    ):
        raise CheckpointError(source, "invalid configuration", fix, "config must map names to integers")
    try:
        return ModelConfig.from_dict(values).validate()
    except MlmError as error:
        raise CheckpointError(source, "invalid configuration", fix, str(error)) from None


def _check_expected_sizes(ckpt: Checkpoint, expected_sizes: ExpectedSizes, source: Path | str) -> None:
    """Reject arrays whose sizes differ from what the C core lays out for the stored configuration."""
    try:
        n_weights, n_state = expected_sizes(ckpt.config)
    except MlmError as error:
        raise CheckpointError(source, "unsupported configuration", "use a checkpoint this mlm build can run",
                              str(error)) from None
    if (ckpt.weights.size, ckpt.state.size) != (n_weights, n_state):
        raise CheckpointError(
            source, "another model size",
            "it was written for a different model layout: use --fresh or another --run-dir",
            f"{ckpt.weights.size} weights and {ckpt.state.size} state bytes, "
            f"this mlm expects {n_weights} and {n_state}",
        )


# ---------------------------------------------------------------------------------------------
# Files


def read_checkpoint(path: Path | str, expected_sizes: ExpectedSizes | None = None) -> Checkpoint:
    """Read and verify one checkpoint file; any problem is a :class:`CheckpointError`."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            # Check the magic before reading a possibly huge file that is not a checkpoint at all.
            head = file.read(len(MAGIC))
            if head != MAGIC:
                _check_magic(head, path)  # raises "wrong magic" or "truncated"
            data = head + file.read()
    except FileNotFoundError:
        raise CheckpointError(path, "missing", "check the path, or use --ckpt latest") from None
    except IsADirectoryError:
        raise CheckpointError(
            path, "not a file", "name a checkpoint file, or pass the directory as --run-dir"
        ) from None
    except OSError as error:
        raise CheckpointError(path, "unreadable", "check the file's permissions", error.strerror) from None
    return decode(data, path, expected_sizes)


def write_checkpoint(ckpt: Checkpoint, path: Path | str) -> Path:
    """Write ``ckpt`` to ``path`` atomically: a crash leaves either the old file or the new one."""
    path = Path(path)
    data = encode(ckpt)
    try:
        _atomic_write(path, data)
    except OSError as error:
        raise _write_error(path, error, "the earlier checkpoints are intact") from None
    return path


def _write_error(path: Path, error: OSError, consolation: str) -> CheckpointError:
    """Translate an OSError from a save into a one-line error with the fix."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return CheckpointError(path, "disk full", f"free some space and retry; {consolation}", error.strerror)
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CheckpointError(path, "directory not writable",
                               f"make {path.parent} writable or choose another directory; {consolation}",
                               error.strerror)
    return CheckpointError(path, "write failed", consolation, error.strerror)


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, rename over ``path``, fsync the directory."""
    temp = _temp_path(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    _fsync_directory(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (it may write fewer); honours the kill-during-save test hook."""
    view = memoryview(data)
    if os.environ.get(KILL_DURING_SAVE_ENV) == str(next(_write_counter)):
        half = len(view) // 2
        _write_all_unhooked(fd, view[:half])
        os.kill(os.getpid(), signal.SIGKILL)
    _write_all_unhooked(fd, view)


def _write_all_unhooked(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable. Some filesystems cannot fsync a directory; the rename is done either way."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------
# Run directories


@dataclass(frozen=True)
class SlotInfo:
    """What :meth:`RunDir.scan` found in one slot file (fields are None when it is not valid)."""

    name: str
    path: Path
    #: Ring index 0-9, or None for ``egg.ckpt.best``.
    slot: int | None
    exists: bool
    valid: bool
    reason: str | None = None
    step: int | None = None
    created: float | None = None
    train_loss: float | None = None
    val_bpb: float | None = None
    best_metric: float | None = None
    best_metric_name: str | None = None
    #: The run the file belongs to (see :attr:`Checkpoint.identity`).
    identity: tuple | None = None
    #: Set by :meth:`RunDir.scan` when the file is valid but belongs to another run than the directory's:
    #: the fields that differ. Such a file is never resumed.
    other_run: str | None = None


class RunDir:
    """A run directory: ``egg.ckpt.0`` ... ``egg.ckpt.9`` (a ring), ``egg.ckpt.best``, ``training.log``.

    ``problems`` lists the invalid files found by the latest scan (every method that looks at the
    slots scans), so the caller can log e.g. "skipping egg.ckpt.3: checksum mismatch".
    """

    def __init__(self, path: Path | str, expected_sizes: ExpectedSizes | None = None) -> None:
        self.path = Path(path)
        self.expected_sizes = expected_sizes
        self.problems: list[SlotInfo] = []

    def slot_path(self, slot: int) -> Path:
        """Path of ring slot ``slot`` (0-9)."""
        return self.path / f"{SLOT_PREFIX}{slot}"

    @property
    def best_path(self) -> Path:
        return self.path / BEST_NAME

    def _all_paths(self) -> list[tuple[int | None, Path]]:
        return [(slot, self.slot_path(slot)) for slot in range(RING_SIZE)] + [(None, self.best_path)]

    # -- reading ------------------------------------------------------------------------------

    def scan(self) -> list[SlotInfo]:
        """Read and verify every slot and the best file, marking files of another run; refreshes ``problems``.

        The directory's run is the one most of its valid files (ring and best) belong to, ties going
        to the run with the highest step: one stray file of another model, even at a higher step,
        is then never taken for the run, while a run that replaced another one slot by slot still
        wins once it holds most of the ring.
        """
        infos = [self._inspect(slot, path) for slot, path in self._all_paths()]
        self.problems = [info for info in infos if info.exists and not info.valid]
        valid = [info for info in infos if info.valid]
        if not valid:
            return infos
        votes = collections.Counter(info.identity for info in valid)
        newest = {identity: max(_recency(i) for i in valid if i.identity == identity) for identity in votes}
        own = max(votes, key=lambda identity: (votes[identity], newest[identity]))
        return [info if not info.valid or info.identity == own
                else dataclasses.replace(info, other_run=identity_difference(info.identity, own)) for info in infos]

    def other_runs(self, ckpt: Checkpoint) -> list[SlotInfo]:
        """Valid files that belong to another run than ``ckpt``, each with ``other_run`` naming the difference."""
        return [dataclasses.replace(info, other_run=identity_difference(info.identity, ckpt.identity))
                for info in self.scan() if info.valid and info.identity != ckpt.identity]

    def _inspect(self, slot: int | None, path: Path) -> SlotInfo:
        if not path.exists():
            return SlotInfo(path.name, path, slot, exists=False, valid=False, reason="missing")
        try:
            ckpt = read_checkpoint(path, self.expected_sizes)
        except CheckpointError as error:
            return SlotInfo(path.name, path, slot, exists=True, valid=False, reason=error.reason)
        return SlotInfo(
            path.name, path, slot, exists=True, valid=True, step=ckpt.step, created=ckpt.created,
            train_loss=ckpt.metrics["train_loss"], val_bpb=ckpt.metrics["val_bpb"],
            best_metric=ckpt.metrics["best_metric"], best_metric_name=ckpt.best_metric_name,
            identity=ckpt.identity,
        )

    def has_checkpoints(self) -> bool:
        """Whether any slot or best file exists, valid or not."""
        return any(path.exists() for _, path in self._all_paths())

    def latest(self) -> Checkpoint | None:
        """The run's valid ring slot with the highest step (ties: newest ``created``), damaged files and
        files of another run (see :meth:`scan`) skipped.

        When no ring slot is valid, a valid best file is returned instead, so a run whose ring is
        entirely damaged does not restart from scratch. None when nothing is usable.
        """
        infos = [info for info in self.scan() if info.valid and info.other_run is None]
        ring = sorted((i for i in infos if i.slot is not None), key=_recency, reverse=True)
        best = [i for i in infos if i.slot is None]
        return self._first_readable(ring or best)

    def best(self) -> Checkpoint | None:
        """The best checkpoint, or None when it is missing or damaged (then listed in ``problems``)."""
        info = self._inspect(None, self.best_path)
        self.problems = [info] if info.exists and not info.valid else []
        return self._first_readable([info] if info.valid else [])

    def _first_readable(self, candidates: list[SlotInfo]) -> Checkpoint | None:
        """Read the first candidate that is still valid (a file may change between scan and read)."""
        for info in candidates:
            try:
                return read_checkpoint(info.path, self.expected_sizes)
            except CheckpointError as error:
                self.problems.append(SlotInfo(info.name, info.path, info.slot, True, False, error.reason))
        return None

    def resolve(self, spec: str) -> Checkpoint:
        """Load the checkpoint named by ``spec``: ``best``, ``latest``, a slot number 0-9 or a file path.

        A relative path is taken from the current directory; a bare name that does not exist
        there is looked up in the run directory. Named files that are missing or damaged raise
        :class:`CheckpointError`; an empty run directory raises :class:`NoCheckpointError`.
        """
        if spec == "latest":
            return self._resolve_latest()
        if spec == "best":
            self._require_any()
            return read_checkpoint(self.best_path, self.expected_sizes)
        if spec.isdigit() and int(spec) < RING_SIZE:
            self._require_any()
            return read_checkpoint(self.slot_path(int(spec)), self.expected_sizes)
        path = Path(spec).expanduser()
        if not path.exists() and not path.is_absolute() and (self.path / path).exists():
            path = self.path / path
        if not path.exists():
            fix = f"--ckpt takes best, latest, a slot number 0-{RING_SIZE - 1} or a file path"
            raise CheckpointError(path, "missing", fix)
        return read_checkpoint(path, self.expected_sizes)

    def _resolve_latest(self) -> Checkpoint:
        self._require_any()
        ckpt = self.latest()
        if ckpt is None:
            found = "; ".join(f"{info.name}: {info.reason}" for info in self.problems)
            raise CheckpointError(self.path, "no usable checkpoint",
                                  "use --fresh to archive them and start over", found)
        return ckpt

    def _require_any(self) -> None:
        if not self.has_checkpoints():
            raise NoCheckpointError(
                f"no checkpoint in {self.path} yet: run `python -m mlm.egg train --run-dir {self.path}` first"
            )

    # -- writing ------------------------------------------------------------------------------

    def save(self, ckpt: Checkpoint) -> Path:
        """Write the next ring slot: the one after the valid slot with the highest step (slot 0 if none).

        Returns the path written. Writers should hold :meth:`lock`.
        """
        self._ensure_directory()
        ring = [info for info in self.scan() if info.valid and info.slot is not None]
        newest = max(ring, key=_recency, default=None)
        slot = 0 if newest is None else (newest.slot + 1) % RING_SIZE
        return write_checkpoint(ckpt, self.slot_path(slot))

    def save_best(self, ckpt: Checkpoint) -> bool:
        """Rewrite ``egg.ckpt.best`` if ``ckpt`` is strictly better; return whether it was written.

        "Better" compares the current value of the tracked metric (``ckpt.tracked_metric``). A
        checkpoint without a value is never better. It is better than a missing or damaged best
        file, and than one tracking a different metric (e.g. validation turned on mid-run: the
        old value is not comparable, the newer metric is the one that matters).
        """
        value = ckpt.tracked_metric
        if value is None:
            return False
        current = self.best()
        if current is not None and current.best_metric_name == ckpt.best_metric_name:
            old = current.tracked_metric
            if old is not None and not value < old:
                return False
        self._ensure_directory()
        write_checkpoint(ckpt, self.best_path)
        return True

    def archive_existing(self) -> Path:
        """Move every checkpoint file and ``training.log`` into a new ``old-YYYYmmdd-HHMMSS`` folder.

        Used by ``--fresh``; nothing is ever deleted. Returns the folder.
        """
        self._ensure_directory()
        archive = self._new_archive_folder()
        for path in [p for _, p in self._all_paths()] + [self.path / LOG_NAME]:
            if path.exists():
                try:
                    os.rename(path, archive / path.name)
                except OSError as error:
                    raise MlmError(f"cannot move {path} into {archive}: {error.strerror}; "
                                   f"check the permissions of {self.path}") from None
        _fsync_directory(self.path)
        return archive

    def archive_newer_than(self, step: int) -> Path | None:
        """Move ring slots with a step above ``step`` into a dated folder; return it, or None if none.

        Resuming from best abandons the newer steps; without this, a later crash-resume would
        pick them up again instead of the continued run.
        """
        newer = [info.path for info in self.scan()
                 if info.slot is not None and info.valid and info.step is not None and info.step > step]
        return self.archive_files(newer) if newer else None

    def archive_files(self, paths: list[Path]) -> Path:
        """Move ``paths`` (files of this directory) into a new dated folder; return the folder."""
        archive = self._new_archive_folder()
        for path in paths:
            os.rename(path, archive / path.name)
        _fsync_directory(self.path)
        return archive

    def remove_if_unused(self) -> None:
        """Remove the directory if it holds nothing but a log and lock files (a start that failed)."""
        if not self.path.is_dir() or self.has_checkpoints():
            return
        for name in (LOG_NAME, LOCK_NAME, LOCK_OWNER_NAME):
            with contextlib.suppress(OSError):
                (self.path / name).unlink()
        with contextlib.suppress(OSError):
            self.path.rmdir()  # fails, harmlessly, if anything else is in it

    def _new_archive_folder(self) -> Path:
        """Create a fresh dated folder; a suffix keeps two archives within one second apart."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for attempt in range(1000):
            folder = self.path / (f"old-{stamp}" if attempt == 0 else f"old-{stamp}-{attempt}")
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            except OSError as error:
                raise MlmError(
                    f"cannot create {folder}: {error.strerror}; check the permissions of {self.path}"
                ) from None
            return folder
        raise MlmError(f"too many archive folders named old-{stamp}* in {self.path}; remove some")

    def _ensure_directory(self) -> None:
        """Create the run directory if needed, with a one-line error when that is impossible."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            reason = error.strerror or str(error)
            raise MlmError(f"cannot create run directory {self.path}: {reason}; choose another --run-dir") \
                from None
        if not self.path.is_dir():
            raise MlmError(f"run directory {self.path} is not a directory; choose another --run-dir")

    def _remove_temp_files(self) -> None:
        """Delete temporary files left by writers that were killed; only safe while holding the lock."""
        for temp in self.path.glob(f".{SLOT_PREFIX}*.tmp-*"):
            with contextlib.suppress(OSError):
                temp.unlink()

    @contextlib.contextmanager
    def lock(self) -> Iterator[RunDir]:
        """Hold the run directory exclusively for one writer (``mlm train``); fails at once if taken.

        Opening the directory for writing also removes temporary files of killed writers. The
        lock is an OS-level lock, so one left by a killed process never blocks.
        """
        self._ensure_directory()
        file_lock = filelock.FileLock(str(self.path / LOCK_NAME), timeout=0)
        try:
            file_lock.acquire()
        except filelock.Timeout:
            raise MlmError(f"another mlm train is already using {self.path} ({self._lock_owner()}); "
                           "wait for it to finish, stop it, or use another --run-dir") from None
        except OSError as error:
            raise MlmError(f"run directory {self.path} is not writable: {error.strerror}; "
                           "choose another --run-dir") from None
        owner = self.path / LOCK_OWNER_NAME
        try:
            try:
                owner.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
            except OSError as error:
                raise MlmError(f"cannot write in run directory {self.path}: {error.strerror}; free some space "
                               "or choose another --run-dir") from None
            self._remove_temp_files()
            yield self
        finally:
            with contextlib.suppress(OSError):
                owner.unlink()
            file_lock.release()

    def _lock_owner(self) -> str:
        """Describe the lock holder from the sidecar file it wrote, as well as can be known."""
        try:
            owner = json.loads((self.path / LOCK_OWNER_NAME).read_text())
            return f"pid {int(owner['pid'])} on host {owner['host']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "pid unknown"


def _recency(info: SlotInfo) -> tuple[int, float]:
    """Order valid slots by step, then by creation time."""
    return (info.step or 0, info.created or 0.0)


# ---------------------------------------------------------------------------------------------
# Export


def export_weights(ckpt: Checkpoint, out_path: Path | str, tensors: list[tuple[str, int, int, int]]) -> Path:
    """Write the weights as named tensors to ``.safetensors`` or ``.npz`` (chosen by the suffix).

    ``tensors`` lists ``(name, rows, cols, offset)`` into the flat weight buffer, as the C core
    lays it out; a tensor with one row is exported as a 1-D vector of ``cols`` values.
    """
    out_path = Path(out_path)
    suffix = out_path.suffix.lower()
    if suffix not in (".safetensors", ".npz"):
        raise MlmError(f"cannot export to {out_path}: the file name must end in .safetensors or .npz")
    arrays = _slice_tensors(ckpt.weights, tensors)
    config_json = json.dumps(ckpt.config.to_dict(), sort_keys=True)
    if suffix == ".safetensors":
        metadata = {
            "mlm_config": config_json, "step": str(ckpt.step), "weights_sha256": ckpt.weights_sha256(),
        }
        data = safetensors.numpy.save(arrays, metadata=metadata)
    else:
        if "__config__" in arrays:
            raise ValueError("a tensor may not be named __config__")
        buffer = io.BytesIO()
        np.savez(buffer, __config__=np.array(config_json), **arrays)
        data = buffer.getvalue()
    try:
        _atomic_write(out_path, data)
    except OSError as error:
        raise MlmError(f"cannot write {out_path}: {error.strerror}; choose another output path") from None
    return out_path


def _slice_tensors(weights: np.ndarray, tensors: list[tuple[str, int, int, int]]) -> dict[str, np.ndarray]:
    """Cut the flat buffer into named arrays, checking the table against the buffer."""
    arrays: dict[str, np.ndarray] = {}
    for name, rows, cols, offset in tensors:
        end = offset + rows * cols
        if name in arrays or rows < 1 or cols < 1 or offset < 0 or end > weights.size:
            raise ValueError(
                f"tensor {name!r} ({rows}x{cols} at {offset}) does not fit {weights.size} weights "
                "or repeats a name"
            )
        values = weights[offset:end]
        arrays[name] = (values.copy() if rows == 1 else values.reshape(rows, cols).copy())
    return arrays
