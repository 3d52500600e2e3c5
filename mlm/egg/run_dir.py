"""A run directory: a ring of 10 checkpoint slots plus ``egg.ckpt.best``, its lock, and archives.

``egg.ckpt.0`` ... ``egg.ckpt.9`` are written round robin, ``egg.ckpt.best`` only when the tracked
metric strictly improves. One writer holds the directory's lock at a time. Nothing is ever
deleted: ``--fresh``, resuming from best and files of another run move files into dated
``old-YYYYmmdd-HHMMSS`` folders. The files themselves are :mod:`mlm.egg.checkpoint`'s.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import filelock

from mlm.egg.checkpoint import (
    Checkpoint,
    CheckpointError,
    ExpectedSizes,
    fsync_directory,
    identity_difference,
    read_checkpoint,
    write_checkpoint,
)
from mlm.egg.logbook import LOG_NAME
from mlm.errors import MlmError

RING_SIZE = 10
SLOT_PREFIX = "egg.ckpt."
BEST_NAME = "egg.ckpt.best"
LOCK_NAME = ".lock"
LOCK_OWNER_NAME = ".lock.owner"


class NoCheckpointError(MlmError):
    """A run directory holds no checkpoint at all: nothing has been trained there yet."""


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
    #: The step whose weights val_bpb scored (None: not recorded, files written before mlm kept it).
    val_step: int | None = None
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
        """Path of ``egg.ckpt.best``."""
        return self.path / BEST_NAME

    def _all_paths(self) -> list[tuple[int | None, Path]]:
        """(slot, path) of every ring slot, then (None, path) of the best file."""
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
        """Read and verify one file into a :class:`SlotInfo`."""
        if not path.exists():
            return SlotInfo(path.name, path, slot, exists=False, valid=False, reason="missing")
        try:
            ckpt = read_checkpoint(path, self.expected_sizes)
        except CheckpointError as error:
            return SlotInfo(path.name, path, slot, exists=True, valid=False, reason=error.reason)
        return SlotInfo(
            path.name, path, slot, exists=True, valid=True, step=ckpt.step, created=ckpt.created,
            train_loss=ckpt.metrics["train_loss"], val_bpb=ckpt.metrics["val_bpb"], val_step=ckpt.extra.get("val_step"),
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
        """The latest valid checkpoint, or an error listing why every file was skipped."""
        self._require_any()
        ckpt = self.latest()
        if ckpt is None:
            found = "; ".join(f"{info.name}: {info.reason}" for info in self.problems)
            raise CheckpointError(self.path, "no usable checkpoint",
                                  "use --fresh to archive them and start over", found)
        return ckpt

    def _require_any(self) -> None:
        """Raise :class:`NoCheckpointError` when the directory holds no checkpoint file at all."""
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
        fsync_directory(self.path)
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
        fsync_directory(self.path)
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
