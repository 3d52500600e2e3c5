"""Load a training corpus and split it into training and validation bytes.

A headered corpus (``// === FILE: <path> ===`` lines, as written by ``python -m mlm.data
build``) is split by file with the pinned rule of :mod:`mlm.data.split`; each file's bytes
include its header line and trailing newline, and bytes before the first header go to
training. Any other text is split by fixed-size blocks. The fraction comes from the
``<stem>.manifest.json`` beside the file when there is one, so a corpus is always split the
way it was built.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlm.data.split import DEFAULT_VAL_FRACTION, check_fraction, split_blocks, split_files
from mlm.errors import MlmError

HEADER_PREFIX = b"// === FILE: "
HEADER_SUFFIX = b" ==="
BUILD_HINT = "build it with ./scripts/build_threejs_dataset.sh or pass another file with --data"


@dataclass(frozen=True)
class Section:
    """One file of a headered corpus inside the validation bytes: ``val[start:stop]``, header line included."""

    path: str
    start: int
    stop: int


@dataclass(frozen=True, eq=False)
class Corpus:
    """A corpus split into training and validation bytes.

    ``n_files`` and ``n_val_files`` count header sections; both are 0 for headerless text.
    ``val_sections`` locates each validation file in ``val`` (empty for headerless text).
    """

    train: np.ndarray
    val: np.ndarray
    path: Path
    n_files: int
    n_val_files: int
    headered: bool
    sha256: str
    val_fraction: float
    val_sections: tuple[Section, ...] = ()

    @property
    def train_bytes(self) -> int:
        """Number of training bytes."""
        return int(self.train.size)

    @property
    def val_bytes(self) -> int:
        """Number of validation bytes."""
        return int(self.val.size)


def manifest_path(path: str | os.PathLike) -> Path:
    """Return the manifest beside a corpus file: ``input.txt`` -> ``input.manifest.json``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.manifest.json")


def _manifest_fraction(path: Path) -> float | None:
    """Return the val_fraction recorded in the manifest beside ``path``, or None when there is none."""
    manifest = manifest_path(path)
    if not manifest.is_file():
        return None
    try:
        return check_fraction(json.loads(manifest.read_text(encoding="utf-8"))["val_fraction"])
    except (OSError, ValueError, KeyError, TypeError, MlmError) as exc:
        raise MlmError(
            f"manifest {manifest} is unreadable or lacks a valid val_fraction ({exc}); "
            "rebuild the dataset or delete the manifest"
        ) from None


def _read(path: Path) -> bytes:
    """Read the corpus file, turning a missing or unreadable file into an MlmError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MlmError(f"training data {path} does not exist; {BUILD_HINT}") from None
    except OSError as exc:
        raise MlmError(f"cannot read training data {path} ({exc.strerror}); {BUILD_HINT}") from None
    if not data:
        raise MlmError(f"training data {path} is empty; {BUILD_HINT}")
    return data


def find_headers(raw: bytes) -> list[tuple[int, str]]:
    """Return ``(offset, path)`` for every line that matches ``^// === FILE: (.+) ===$`` exactly.

    Searching for the prefix with ``bytes.find`` is several times faster than a multiline
    regex over the whole corpus, and only the few candidate lines are inspected in Python.
    """
    headers = []
    pos = raw.find(HEADER_PREFIX)
    while pos != -1:
        end = raw.find(b"\n", pos)
        end = len(raw) if end == -1 else end
        name = raw[pos + len(HEADER_PREFIX) : end]
        at_line_start = pos == 0 or raw[pos - 1] == 0x0A
        if at_line_start and name.endswith(HEADER_SUFFIX) and len(name) > len(HEADER_SUFFIX):
            headers.append((pos, name[: -len(HEADER_SUFFIX)].decode("utf-8", "surrogateescape")))
        pos = raw.find(HEADER_PREFIX, pos + 1)
    return headers


def _gather(data: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """Concatenate ``data[start:end]`` for each span, merging neighbouring spans first."""
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and merged[-1][1] == start:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    if not merged:
        return np.empty(0, dtype=np.uint8)
    return np.concatenate([data[start:end] for start, end in merged])


def section_body(raw: bytes, start: int, end: int) -> bytes:
    """A section's file content: its bytes after the header line."""
    newline = raw.find(b"\n", start, end)
    return raw[newline + 1 : end] if newline != -1 else b""


def _split_headered(data: np.ndarray, raw: bytes, starts: list[int], paths: list[str], fraction: float):
    """Return ``(train, val, val_sections)`` for a corpus whose sections start at ``starts``."""
    ends = starts[1:] + [len(raw)]
    flags = split_files(paths, fraction, [section_body(raw, s, e) for s, e in zip(starts, ends, strict=True)])
    train = [(0, starts[0])] if starts[0] else []
    val, sections, offset = [], [], 0
    for path, start, end, is_val in zip(paths, starts, ends, flags, strict=True):
        if is_val:
            val.append((start, end))
            sections.append(Section(path, offset, offset + end - start))
            offset += end - start
        else:
            train.append((start, end))
    return _gather(data, train), _gather(data, val), tuple(sections)


def _split_headerless(data: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(train, val)`` for headerless text split by blocks."""
    size, flags = split_blocks(data.size, fraction)
    train, val = [], []
    for i, is_val in enumerate(flags):
        (val if is_val else train).append((i * size, min((i + 1) * size, data.size)))
    return _gather(data, train), _gather(data, val)


def load_corpus(path: str | os.PathLike, val_fraction: float = DEFAULT_VAL_FRACTION) -> Corpus:
    """Read ``path`` and split it into training and validation bytes (see the module docstring)."""
    path = Path(path)
    raw = _read(path)
    fraction = _manifest_fraction(path)
    fraction = check_fraction(val_fraction) if fraction is None else fraction
    data = np.frombuffer(raw, dtype=np.uint8)
    headers = find_headers(raw)
    if headers:
        starts = [offset for offset, _ in headers]
        paths = [name for _, name in headers]
        train, val, sections = _split_headered(data, raw, starts, paths, fraction)
    else:
        train, val = _split_headerless(data, fraction)
        sections = ()
    return Corpus(
        train=train,
        val=val,
        path=path,
        n_files=len(headers),
        n_val_files=len(sections),
        headered=bool(headers),
        sha256=hashlib.sha256(raw).hexdigest(),
        val_fraction=fraction,
        val_sections=sections,
    )
