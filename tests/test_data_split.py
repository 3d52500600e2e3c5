"""Tests for the pinned validation split and the corpus loader."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

from mlm.data.corpus import Corpus, find_headers, load_corpus
from mlm.data.split import (
    LARGE_BLOCK,
    MIN_LARGE_BLOCKS,
    SMALL_BLOCK,
    block_size_for,
    check_fraction,
    hash_fraction,
    split_blocks,
    split_files,
)
from mlm.errors import MlmError

PATHS = [f"src/module{i:03d}/file{i}.js" for i in range(200)]


def corpus_text(paths: list[str], prefix: bytes = b"") -> bytes:
    """A headered corpus with one short file per path, after an optional preamble."""
    return prefix + b"".join(f"// === FILE: {p} ===\n".encode() + f"body of {p}\n\n".encode() for p in paths)


def write_corpus(tmp_path: Path, data: bytes) -> Path:
    """Write ``data`` as ``input.txt`` in ``tmp_path``."""
    path = tmp_path / "input.txt"
    path.write_bytes(data)
    return path


# --- split rules ----------------------------------------------------------------------------


def test_hash_fraction_follows_the_documented_formula() -> None:
    key = "src/core/Object3D.js"
    expected = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    assert hash_fraction(key) == expected
    assert 0.0 <= hash_fraction("") < 1.0


def test_split_files_is_stable_and_order_independent() -> None:
    flags = split_files(PATHS, 0.05)
    assert flags == split_files(list(PATHS), 0.05)
    shuffled = PATHS[:]
    random.Random(0).shuffle(shuffled)
    assert dict(zip(shuffled, split_files(shuffled, 0.05), strict=True)) == dict(
        zip(PATHS, flags, strict=True)
    )
    assert flags == [hash_fraction(p) < 0.05 for p in PATHS]
    assert 0 < sum(flags) < len(PATHS)


def test_no_file_under_fraction_picks_the_smallest_hash() -> None:
    paths = PATHS[:5]
    flags = split_files(paths, 1e-12)
    assert sum(flags) == 1
    assert paths[flags.index(True)] == min(paths, key=hash_fraction)


def test_every_file_under_fraction_keeps_the_largest_for_training() -> None:
    paths = PATHS[:5]
    flags = split_files(paths, 1 - 1e-12)
    assert flags.count(False) == 1
    assert paths[flags.index(False)] == max(paths, key=hash_fraction)


def test_single_file_has_no_validation_and_repeats_agree() -> None:
    assert split_files(["only.js"], 0.5) == [False]
    flags = split_files(["a.js", "b.js", "a.js"], 0.05)
    assert flags[0] == flags[2] and sum(flags[:2]) == 1


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, float("nan")])
def test_fraction_must_be_inside_zero_one(bad: float) -> None:
    with pytest.raises(MlmError, match="out of range"):
        check_fraction(bad)


def test_block_size_switches_at_twenty_large_blocks() -> None:
    assert block_size_for(MIN_LARGE_BLOCKS * LARGE_BLOCK - 1) == SMALL_BLOCK
    assert block_size_for(MIN_LARGE_BLOCKS * LARGE_BLOCK) == LARGE_BLOCK


@pytest.mark.parametrize(
    "n_bytes", [SMALL_BLOCK + 1, 3 * SMALL_BLOCK, 100_000, 20 * LARGE_BLOCK, 77 * LARGE_BLOCK + 5]
)
def test_block_split_is_non_empty_on_both_sides(n_bytes: int) -> None:
    size, flags = split_blocks(n_bytes, 0.05)
    assert len(flags) == -(-n_bytes // size)
    assert any(flags) and not all(flags)
    assert (size, flags) == split_blocks(n_bytes, 0.05)
    raw = [hash_fraction(f"block:{i}") < 0.05 for i in range(len(flags))]
    if any(raw):
        assert flags == raw
    else:
        assert flags.index(True) == min(range(len(flags)), key=lambda i: hash_fraction(f"block:{i}"))


# --- load_corpus ----------------------------------------------------------------------------


def test_headered_corpus_split_is_disjoint_and_complete(tmp_path: Path) -> None:
    prefix = b"preamble before any header\n"
    data = corpus_text(PATHS, prefix)
    corpus = load_corpus(write_corpus(tmp_path, data))
    assert corpus.headered and corpus.n_files == len(PATHS)
    assert corpus.train.dtype == np.uint8 and corpus.val.dtype == np.uint8
    assert corpus.train_bytes + corpus.val_bytes == len(data)
    flags = split_files(PATHS, 0.05)
    val_paths = [p for p, f in zip(PATHS, flags, strict=True) if f]
    assert corpus.n_val_files == len(val_paths)
    assert corpus.val.tobytes() == corpus_text(val_paths)
    assert corpus.train.tobytes() == prefix + corpus_text([p for p in PATHS if p not in val_paths])
    assert corpus.sha256 == hashlib.sha256(data).hexdigest()


def test_load_corpus_is_repeatable(tmp_path: Path) -> None:
    path = write_corpus(tmp_path, corpus_text(PATHS))
    first, second = load_corpus(path), load_corpus(path)
    assert np.array_equal(first.train, second.train) and np.array_equal(first.val, second.val)


def test_only_exact_header_lines_count() -> None:
    raw = (
        b"// === FILE: a.js ===\n"
        b"x = '// === FILE: inline.js ===';\n"
        b" // === FILE: indented.js ===\n"
        b"// === FILE: trailing.js === \n"
        b"// === FILE:  ===\n"
        b"// === FILE: b c.js ==="
    )
    assert [name for _, name in find_headers(raw)] == ["a.js", "b c.js"]


def test_headerless_text_is_split_by_blocks(tmp_path: Path) -> None:
    data = bytes(random.Random(1).randrange(32, 127) for _ in range(50_000))
    corpus = load_corpus(write_corpus(tmp_path, data))
    assert not corpus.headered and corpus.n_files == 0
    assert corpus.train_bytes > 0 and corpus.val_bytes > 0
    size, flags = split_blocks(len(data), 0.05)
    blocks = [data[i * size : (i + 1) * size] for i in range(len(flags))]
    assert corpus.val.tobytes() == b"".join(b for b, f in zip(blocks, flags, strict=True) if f)
    assert corpus.train.tobytes() == b"".join(b for b, f in zip(blocks, flags, strict=True) if not f)


def test_manifest_fraction_overrides_the_argument(tmp_path: Path) -> None:
    path = write_corpus(tmp_path, corpus_text(PATHS))
    (tmp_path / "input.manifest.json").write_text(json.dumps({"val_fraction": 0.5}))
    corpus = load_corpus(path, val_fraction=0.05)
    assert corpus.val_fraction == 0.5
    assert corpus.n_val_files == sum(split_files(PATHS, 0.5))


def test_corpus_is_frozen(tmp_path: Path) -> None:
    corpus = load_corpus(write_corpus(tmp_path, corpus_text(PATHS[:3])))
    assert isinstance(corpus, Corpus)
    with pytest.raises(dataclasses.FrozenInstanceError):
        corpus.train = corpus.val  # type: ignore[misc]


def test_missing_file_names_path_and_fix(tmp_path: Path) -> None:
    missing = tmp_path / "input.txt"
    with pytest.raises(MlmError) as info:
        load_corpus(missing)
    message = str(info.value)
    assert str(missing) in message and "build_threejs_dataset.sh" in message and "--data" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        (lambda d: (d / "input.txt").write_bytes(b""), "is empty"),
        (
            lambda d: ((d / "input.txt").write_bytes(b"x"), (d / "input.manifest.json").write_text("{")),
            "manifest",
        ),
        (lambda d: (d / "input.txt").mkdir(), "cannot read"),
    ],
)
def test_unusable_corpus_is_an_mlm_error(tmp_path: Path, setup, fragment: str) -> None:
    setup(tmp_path)
    with pytest.raises(MlmError, match=fragment):
        load_corpus(tmp_path / "input.txt")
