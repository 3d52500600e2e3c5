"""The pinned train/validation split.

The split is a pure function of names, never of file contents, run order or machine, so the
same file is held out in every run and every release of a dataset and ``val_bpb`` stays
comparable.

Rule for headered corpora (``// === FILE: <path> ===`` sections), decided per group of files:

* files that are copies of each other form one group, so validation never scores a near-copy
  of a training file: the same content after removing all whitespace (ASCII whitespace:
  re-indented or re-wrapped copies match); the same file name under a vendored folder
  (``libs/draco/draco_encoder.js`` and ``libs/draco/gltf/draco_encoder.js``); or a near copy:
  two files with at least :data:`NEAR_COPY_MIN_LINES` distinct lines of
  :data:`NEAR_COPY_LINE_BYTES` or more bytes each (whitespace stripped), of which at least
  :data:`NEAR_COPY_SHARE` of the smaller file's also occur in the other (three.js r170 has 14
  such files, e.g. ``lines/LineSegments2.js`` and ``lines/webgpu/LineSegments2.js``, or
  ``lwo/LWO2Parser.js`` and ``lwo/LWO3Parser.js``); lines found in more than
  :data:`NEAR_COPY_MAX_FILES` files (licence headers, common imports) do not count. Groups are
  closed under all three rules; every other file is a group of its own;
* a group is validation when ``hash_fraction(key) < val_fraction``, its key being its first
  path in byte order (so a file without copies is decided by its own path, as before groups
  existed), where ``hash_fraction`` is the first 8 bytes of ``sha256(path as UTF-8)`` read as
  a big-endian integer over ``2**64``;
* with two or more groups both splits are kept non-empty: if no key falls under the fraction,
  the group with the smallest hash is validation; if every key does, the group with the
  largest hash goes back to training;
* a corpus with a single group has no validation split (it would leave nothing to train on).

Rule for headerless text, decided per fixed-size block of bytes:

* blocks are 64 KiB (block ``i`` covers bytes ``[i * 65536, (i + 1) * 65536)``), or 4 KiB
  when the text is shorter than 20 blocks of 64 KiB, so small texts still get several blocks;
  the last block may be short;
* block ``i`` is validation when ``hash_fraction(f"block:{i}") < val_fraction``, with the same
  non-empty guarantee as above whenever there are two or more blocks;
* text of a single block (under 4 KiB) has no validation split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from mlm.data.hygiene import vendored_folder
from mlm.errors import MlmError

DEFAULT_VAL_FRACTION = 0.05
#: Names the rules below; anything cached per corpus and split (the baselines) keys on it.
SPLIT_RULES = "file-hash+copy-groups-v2"
NEAR_COPY_LINE_BYTES = 30
NEAR_COPY_MIN_LINES = 10
NEAR_COPY_SHARE = 0.9
NEAR_COPY_MAX_FILES = 32
LARGE_BLOCK = 64 * 1024
SMALL_BLOCK = 4 * 1024
MIN_LARGE_BLOCKS = 20


def check_fraction(val_fraction: float) -> float:
    """Return ``val_fraction`` as a float, or raise MlmError unless it lies strictly in (0, 1)."""
    value = float(val_fraction)
    if not 0.0 < value < 1.0:
        raise MlmError(
            f"validation fraction {val_fraction!r} is out of range; use a value between 0 and 1, e.g. 0.05"
        )
    return value


def hash_fraction(key: str) -> float:
    """Map ``key`` to a number in [0, 1) from the first 8 bytes of its SHA-256."""
    # surrogateescape keeps undecodable path bytes stable and is identical to plain UTF-8 otherwise.
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _pick(keys: Sequence[str], val_fraction: float) -> set[str]:
    """Apply the hash rule with the non-empty guarantee to distinct ``keys``; return the validation keys."""
    fraction = check_fraction(val_fraction)
    if len(keys) < 2:
        return set()
    scores = {key: hash_fraction(key) for key in keys}
    chosen = {key for key, score in scores.items() if score < fraction}
    if not chosen:
        chosen = {min(keys, key=lambda k: (scores[k], k))}
    elif len(chosen) == len(keys):
        chosen.discard(max(keys, key=lambda k: (scores[k], k)))
    return chosen


@dataclass(frozen=True)
class CopyGroup:
    """Files kept on one side of the split because they are copies of each other."""

    paths: tuple[str, ...]  # in byte order of the UTF-8 path; the first decides the side
    reasons: tuple[str, ...]  # "same content", "same vendored file name"


def content_key(data: bytes) -> str | None:
    """sha256 of ``data`` without any ASCII whitespace, or None for whitespace-only content."""
    squeezed = b"".join(data.split())
    return hashlib.sha256(squeezed).hexdigest() if squeezed else None


def _path_order(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _long_lines(data: bytes) -> set[bytes]:
    return {line for line in (raw.strip() for raw in data.split(b"\n")) if len(line) >= NEAR_COPY_LINE_BYTES}


def near_copies(paths: Sequence[str], contents: Sequence[bytes]) -> list[tuple[str, str]]:
    """Pairs of files that share most of their long lines (see the module docstring)."""
    lines = {path: _long_lines(data) for path, data in zip(paths, contents, strict=True)}
    lines = {path: found for path, found in lines.items() if len(found) >= NEAR_COPY_MIN_LINES}
    holders: dict[bytes, list[str]] = {}
    for path, found in lines.items():
        for line in found:
            holders.setdefault(line, []).append(path)
    pairs = []
    for path, found in lines.items():
        shared: dict[str, int] = {}
        for line in found:
            others = holders[line]
            if len(others) <= NEAR_COPY_MAX_FILES:
                for other in others:
                    shared[other] = shared.get(other, 0) + 1
        for other, count in shared.items():
            smaller = min(len(found), len(lines[other]))
            if _path_order(path) < _path_order(other) and count >= NEAR_COPY_SHARE * smaller:
                pairs.append((path, other))
    return pairs


def copy_groups(paths: Sequence[str], contents: Sequence[bytes]) -> list[CopyGroup]:
    """The groups of two or more files that must share a side (see the module docstring)."""
    parent = {path: path for path in paths}

    def root(path: str) -> str:
        while parent[path] != path:
            parent[path] = parent[parent[path]]
            path = parent[path]
        return path

    links: list[tuple[str, str, str]] = []
    first_by_key: dict[tuple[str, str], str] = {}
    for path, data in zip(paths, contents, strict=True):
        keys = [("same content", content_key(data))]
        if vendored_folder(path) is not None:
            keys.append(("same vendored file name", PurePosixPath(path).name))
        for reason, key in keys:
            if key is None:
                continue
            first = first_by_key.setdefault((reason, key), path)
            if first != path:
                links.append((first, path, reason))
    links += [(a, b, "near copy") for a, b in near_copies(paths, contents)]
    for a, b, _ in links:
        parent[root(a)] = root(b)
    members: dict[str, list[str]] = {}
    for path in parent:
        members.setdefault(root(path), []).append(path)
    reasons: dict[str, set[str]] = {}
    for a, _, reason in links:
        reasons.setdefault(root(a), set()).add(reason)
    groups = [CopyGroup(tuple(sorted(group, key=_path_order)), tuple(sorted(reasons[top])))
              for top, group in members.items() if len(group) > 1]
    return sorted(groups, key=lambda g: _path_order(g.paths[0]))


def split_files(paths: Sequence[str], val_fraction: float = DEFAULT_VAL_FRACTION,
                contents: Sequence[bytes] | None = None) -> list[bool]:
    """Return, for each path in order, whether that file belongs to the validation split.

    With ``contents`` (each file's bytes, header excluded) copies share a side (see
    :func:`copy_groups`); without, every path is its own group. Repeated paths get the same
    answer; the guarantee of non-empty splits counts groups.
    """
    group_of = {path: path for path in paths}
    if contents is not None:
        for group in copy_groups(paths, contents):
            for path in group.paths:
                group_of[path] = group.paths[0]
    chosen = _pick(sorted(set(group_of.values())), val_fraction)
    return [group_of[path] in chosen for path in paths]


def block_size_for(n_bytes: int) -> int:
    """Return the block size used to split ``n_bytes`` of headerless text."""
    return LARGE_BLOCK if n_bytes >= MIN_LARGE_BLOCKS * LARGE_BLOCK else SMALL_BLOCK


def split_blocks(n_bytes: int, val_fraction: float = DEFAULT_VAL_FRACTION) -> tuple[int, list[bool]]:
    """Return ``(block_size, flags)`` for headerless text; ``flags[i]`` marks block ``i`` as validation."""
    size = block_size_for(n_bytes)
    n_blocks = -(-n_bytes // size)
    keys = [f"block:{i}" for i in range(n_blocks)]
    chosen = _pick(keys, val_fraction)
    return size, [key in chosen for key in keys]
