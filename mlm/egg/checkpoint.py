"""A checkpoint (:class:`Checkpoint`), its file format (v1) and the atomic file I/O that reads and writes it.

A checkpoint holds everything a training run needs to continue bit-identically: the
configuration, the step counter, the run seed, the data cursor, the model weights and the
population's recurrent state (both flat int8 buffers whose layout belongs to the C core), and
the metrics that decide which checkpoint is "best". The byte layout is documented in
``docs/checkpoint-format.md``; keep the two in step. The run directory that holds a run's
checkpoints is :mod:`mlm.egg.run_dir`; exporting the weights is :mod:`mlm.egg.export`.

Files are written atomically (temporary file, fsync, rename, fsync of the directory), so a
crash at any instant leaves every earlier checkpoint intact, and every read verifies a SHA-256
over the whole file, so a damaged file is reported and never silently used.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import math
import os
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlm import __version__, env
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
#: ``val_step``: the step whose weights ``metrics["val_bpb"]`` scored (a run evaluates every --eval-every steps and
#: saves more often, so most files carry an older evaluation).
EXTRA_TYPES = {"data_sha256": str, "data_path": str, "val_step": int}
#: Configuration fields a run fixes by itself while it runs (a time-budgeted run fixes its cooldown late in
#: its budget): files of one run may differ in them, so they are no part of the run's identity.
SCHEDULE_FIELDS = ("cooldown_start", "cooldown_end")
#: Counts the files this process writes, for the kill-during-save test hook (mlm.env.TEST_KILL_DURING_SAVE).
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
    """Same dtype, shape and values."""
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
    """JSON parse hook: NaN and Infinity are not JSON, and never valid in a header."""
    raise ValueError(f"{name} is not allowed")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON parse hook: a key given twice is damage, not a choice between two values."""
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
        atomic_write(path, data)
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
    """The temporary file a writer of ``path`` uses: hidden, in the same directory, named by the pid."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(path: Path, data: bytes) -> None:
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
    fsync_directory(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (it may write fewer); honours the kill-during-save test hook."""
    view = memoryview(data)
    if os.environ.get(env.TEST_KILL_DURING_SAVE) == str(next(_write_counter)):
        half = len(view) // 2
        _write_all_unhooked(fd, view[:half])
        os.kill(os.getpid(), signal.SIGKILL)
    _write_all_unhooked(fd, view)


def _write_all_unhooked(fd: int, view: memoryview) -> None:
    """os.write until every byte is written."""
    while view:
        view = view[os.write(fd, view):]


def fsync_directory(directory: Path) -> None:
    """Make the rename durable. Some filesystems cannot fsync a directory; the rename is done either way."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
