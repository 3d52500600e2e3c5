"""The pinned train/validation split.

The split is a pure function of names, never of file contents, run order or machine, so the
same file is held out in every run and every release of a dataset and ``val_bpb`` stays
comparable.

Rule for headered corpora (``// === FILE: <path> ===`` sections), decided per file path:

* a file is validation when ``hash_fraction(path) < val_fraction``, where ``hash_fraction`` is
  the first 8 bytes of ``sha256(path as UTF-8)`` read as a big-endian integer over ``2**64``;
* with two or more distinct paths both splits are kept non-empty: if no path falls under the
  fraction, the path with the smallest hash is validation; if every path does, the path with
  the largest hash goes back to training;
* a corpus with a single file has no validation split (it would leave nothing to train on).

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

from mlm.errors import MlmError

DEFAULT_VAL_FRACTION = 0.05
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


def split_files(paths: Sequence[str], val_fraction: float = DEFAULT_VAL_FRACTION) -> list[bool]:
    """Return, for each path in order, whether that file belongs to the validation split.

    Repeated paths get the same answer; the guarantee of non-empty splits counts distinct paths.
    """
    chosen = _pick(sorted(set(paths)), val_fraction)
    return [path in chosen for path in paths]


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
