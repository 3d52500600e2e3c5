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
from pathlib import Path

import numpy as np

from mlm.data.corpus import load_corpus
from mlm.egg.checkpoint import Checkpoint
from mlm.egg.engine import LOSS_SCALE, Engine
from mlm.errors import MlmError

EVAL_CHUNK = 1024


def bits_per_byte(loss_q16: int, n_bytes: int) -> float:
    """Mean bits per predicted byte of a Q16 loss sum over ``n_bytes`` bytes (n_bytes - 1 predictions)."""
    return loss_q16 / LOSS_SCALE / (n_bytes - 1)


@dataclass(frozen=True)
class EvalResult:
    val_bpb: float
    bytes_evaluated: int
    seconds: float
    source: str


def eval_bytes_of(data: Path | None, ckpt_data: Path | None, max_bytes: int | None) -> tuple[np.ndarray, str]:
    """The bytes to score: all of ``data`` when given, else the validation split of the run's corpus."""
    if data is not None:
        if not data.exists():
            raise MlmError(f"--data {data} does not exist: pass an existing file")
        tokens, source = np.fromfile(data, dtype=np.uint8), str(data)
    else:
        if ckpt_data is None:
            raise MlmError("this run does not say which data it was trained on: pass --data FILE")
        tokens, source = load_corpus(ckpt_data).val, f"{ckpt_data} (validation split)"
        if tokens.size == 0:
            raise MlmError(f"the validation split of {ckpt_data} is empty: pass --data FILE")
    if max_bytes is not None:
        tokens = tokens[:max_bytes]
    if tokens.size < EVAL_CHUNK + 1:
        raise MlmError(f"{source} has {tokens.size} bytes to evaluate, fewer than one evaluation window "
                       f"({EVAL_CHUNK + 1} bytes): use a larger file or a larger --max-bytes")
    return tokens, source


def evaluate(ckpt: Checkpoint, tokens: np.ndarray, source: str, threads: int) -> EvalResult:
    """Score ``tokens`` with the checkpoint's weights."""
    engine = Engine(ckpt.config, threads=threads)
    engine.weights[:] = ckpt.weights
    start = time.monotonic()
    loss = engine.eval_bits(tokens, EVAL_CHUNK)
    return EvalResult(bits_per_byte(loss, tokens.size), int(tokens.size), time.monotonic() - start, source)
