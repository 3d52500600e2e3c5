"""Validation bits per byte: the one number experiments are compared by.

The text is cut into independent chunks of ``EVAL_CHUNK`` predictions; each
chunk starts from a zero recurrent state and predicts every byte after its
first input byte, and consecutive chunks overlap by one byte so every byte
after the first is predicted exactly once. Chunks run in parallel in the C
core, and because the chunking is fixed, the number does not depend on the
thread count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from mlm.data.corpus import Section, find_headers, load_corpus
from mlm.data.hygiene import category
from mlm.egg.checkpoint import Checkpoint
from mlm.egg.engine import LOSS_SCALE, Engine, inference_engine
from mlm.errors import MlmError

EVAL_CHUNK = 1024
FOLDER_DEPTH = 2  # "src/math", "examples/jsm": the level at which three.js's parts differ
TOP_FILES = 10


def bits_per_byte(loss_q16: int, n_bytes: int) -> float:
    """Mean bits per predicted byte of a Q16 loss sum over ``n_bytes`` bytes (n_bytes - 1 predictions)."""
    return loss_q16 / LOSS_SCALE / (n_bytes - 1)


@dataclass(frozen=True)
class EvalResult:
    val_bpb: float
    bytes_evaluated: int
    seconds: float
    source: str


@dataclass(frozen=True)
class EvalText:
    """The bytes to score, where they come from, and the files inside them (empty for plain text)."""

    tokens: np.ndarray
    source: str
    sections: tuple[Section, ...]
    #: Set when the run's corpus file changed since the checkpoint was trained on it.
    warning: str | None = None


def _file_sections(raw: bytes) -> tuple[Section, ...]:
    """The ``// === FILE:`` sections of a headered file, in file offsets."""
    headers = find_headers(raw)
    ends = [offset for offset, _ in headers[1:]] + [len(raw)]
    if not headers:
        return ()
    return tuple(Section(path, start, end) for (start, path), end in zip(headers, ends, strict=True))


def eval_bytes_of(data: Path | None, ckpt_data: Path | None, max_bytes: int | None,
                  trained_sha256: str | None = None) -> EvalText:
    """The bytes to score: all of ``data`` when given, else the validation split of the run's corpus.

    ``trained_sha256`` is the corpus digest the checkpoint records: when the file now differs, the
    result carries a warning (the split scored is no longer the one the run held out).
    """
    warning = None
    if data is not None:
        if not data.exists():
            raise MlmError(f"--data {data} does not exist: pass an existing file")
        raw = data.read_bytes()
        tokens, source, sections = np.frombuffer(raw, dtype=np.uint8), str(data), _file_sections(raw)
    else:
        if ckpt_data is None:
            raise MlmError("this run does not say which data it was trained on: pass --data FILE")
        corpus = load_corpus(ckpt_data)
        tokens, source, sections = corpus.val, f"{ckpt_data} (validation split)", corpus.val_sections
        if trained_sha256 is not None and corpus.sha256 != trained_sha256:
            warning = (f"warning: {ckpt_data} changed since this checkpoint was trained on it: its validation "
                       "split today is scored, which may hold bytes the run trained on; pass --data to score "
                       "another file")
        if tokens.size == 0:
            raise MlmError(f"the validation split of {ckpt_data} is empty: pass --data FILE")
    if max_bytes is not None:
        tokens = tokens[:max_bytes]
        sections = tuple(Section(s.path, s.start, min(s.stop, tokens.size)) for s in sections
                         if s.start < tokens.size)
    if tokens.size < EVAL_CHUNK + 1:
        raise MlmError(f"{source} has {tokens.size} bytes to evaluate, fewer than one evaluation window "
                       f"({EVAL_CHUNK + 1} bytes): use a larger file or a larger --max-bytes")
    return EvalText(tokens, source, sections, warning)


def _engine(ckpt: Checkpoint, threads: int) -> Engine:
    return inference_engine(ckpt.config, ckpt.weights, ckpt.state, threads)


def evaluate(ckpt: Checkpoint, text: EvalText, threads: int) -> EvalResult:
    """Score ``text`` with the checkpoint's weights."""
    engine = _engine(ckpt, threads)
    start = time.monotonic()
    loss = engine.eval_bits(text.tokens, EVAL_CHUNK)
    return EvalResult(bits_per_byte(loss, text.tokens.size), int(text.tokens.size), time.monotonic() - start,
                      text.source)


@dataclass(frozen=True)
class Part:
    """The bits of one part of the scored text: a file, a folder or a category."""

    name: str
    bytes: int  # bytes predicted (a text's first byte is never predicted)
    bits: float

    @property
    def bits_per_byte(self) -> float:
        return self.bits / self.bytes if self.bytes else float("nan")

    def to_dict(self, total_bits: float) -> dict[str, object]:
        return {"name": self.name, "bytes": self.bytes, "bits_per_byte": self.bits_per_byte,
                "share_of_bits": self.bits / total_bits if total_bits else 0.0}


@dataclass(frozen=True)
class Breakdown:
    """Where the bits of an evaluation go: per category, per folder, and the files that cost most."""

    result: EvalResult
    top1_accuracy: float
    total_bits: float
    categories: tuple[Part, ...]
    folders: tuple[Part, ...]
    top_files: tuple[Part, ...]

    def to_dict(self) -> dict[str, object]:
        def rows(parts: tuple[Part, ...]) -> list[dict[str, object]]:
            return [part.to_dict(self.total_bits) for part in parts]

        return {"top1_accuracy": self.top1_accuracy, "categories": rows(self.categories),
                "folders": rows(self.folders), "top_files": rows(self.top_files)}

    def lines(self) -> list[str]:
        """The breakdown as aligned text lines."""
        out = [f"top-1 next-byte accuracy: {self.top1_accuracy:.4f}"]
        for title, parts in (("by category", self.categories), (f"by folder (depth {FOLDER_DEPTH})", self.folders),
                             (f"the {len(self.top_files)} files with the most bits", self.top_files)):
            out.append(f"{title}:  bits/byte  share of bits  bytes")
            width = max(len(p.name) for p in parts)
            out += [f"  {p.name:<{width}}  {p.bits_per_byte:9.4f}  {p.bits / self.total_bits:13.1%}  {p.bytes:,}"
                    for p in parts]
        return out


def folder_of(path: str) -> str:
    """The first :data:`FOLDER_DEPTH` folders of ``path`` (``.`` for a file at the top)."""
    parent = PurePosixPath(path).parent.parts[:FOLDER_DEPTH]
    return "/".join(parent) or "."


def _sum_parts(named: list[tuple[str, int, float]]) -> tuple[Part, ...]:
    """Add up ``(name, bytes, bits)`` by name; the costliest first."""
    totals: dict[str, list[float]] = {}
    for name, n, bits in named:
        entry = totals.setdefault(name, [0, 0.0])
        entry[0] += n
        entry[1] += bits
    parts = [Part(name, int(n), bits) for name, (n, bits) in totals.items()]
    return tuple(sorted(parts, key=lambda p: (-p.bits, p.name)))


def breakdown(ckpt: Checkpoint, text: EvalText, threads: int) -> Breakdown:
    """Score ``text`` per prediction and add the bits up per file, folder and category.

    Bytes outside every file (plain text, or before the first header) count as one part named
    ``(no file)``; a file's header line counts with its file.
    """
    engine = _engine(ckpt, threads)
    start = time.monotonic()
    losses, argmax = engine.eval_detail(text.tokens, EVAL_CHUNK)
    seconds = time.monotonic() - start
    # cumulative[j] = bits of the predictions of bytes 1..j-1; byte j is predicted by prediction j - 1.
    cumulative = np.concatenate([[0, 0], np.cumsum(losses, dtype=np.int64)]) / LOSS_SCALE
    n = int(text.tokens.size)

    def bits(start: int, stop: int) -> tuple[int, float]:
        first = max(start, 1)
        return max(stop - first, 0), float(cumulative[stop] - cumulative[first]) if stop > first else 0.0

    files, covered = [], 0
    for section in text.sections:
        count, cost = bits(section.start, section.stop)
        body = text.tokens[section.start : section.stop].tobytes().split(b"\n", 1)[-1]
        files.append((section.path, count, cost, category(section.path, body)))
        covered += count
    if covered < n - 1:
        files.append(("(no file)", n - 1 - covered, float(cumulative[n]) - sum(f[2] for f in files), "(no file)"))
    total = float(cumulative[n])
    loss = int(losses.sum(dtype=np.int64))
    return Breakdown(
        result=EvalResult(bits_per_byte(loss, n), n, seconds, text.source),
        top1_accuracy=float(np.mean(argmax == text.tokens[1:])),
        total_bits=total,
        categories=_sum_parts([(cat, count, cost) for _, count, cost, cat in files]),
        folders=_sum_parts([(folder_of(path) if cat != "(no file)" else cat, count, cost)
                            for path, count, cost, cat in files]),
        top_files=_sum_parts([(path, count, cost) for path, count, cost, _ in files])[:TOP_FILES],
    )
