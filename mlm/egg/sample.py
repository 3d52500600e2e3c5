"""Sampling bytes from a trained model.

The C core gives int8 logits (base-2 log-probabilities in 1/16 units); the
choice of the next byte happens here, with a numpy generator seeded by the
user, so the same seed gives the same text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mlm.egg.engine import Engine
from mlm.egg.layout import VOCAB
from mlm.errors import MlmError


@dataclass(frozen=True)
class SamplingOptions:
    """How the next byte is chosen from the model's distribution."""

    temperature: float = 0.8
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    seed: int = 0

    def validate(self) -> SamplingOptions:
        if self.temperature < 0:
            raise MlmError(f"--temperature must be >= 0 (got {self.temperature}); 0 means greedy")
        if not 0 <= self.top_k <= VOCAB:
            raise MlmError(f"--top-k must be between 0 (off) and {VOCAB} (got {self.top_k})")
        if not 0.0 <= self.min_p < 1.0:
            raise MlmError(f"--min-p must be in [0, 1) (got {self.min_p})")
        if self.presence_penalty < 0:
            raise MlmError(f"--presence-penalty must be >= 0 (got {self.presence_penalty})")
        return self


def next_byte_probabilities(logits: np.ndarray, options: SamplingOptions, seen: np.ndarray) -> np.ndarray:
    """Turn int8 logits into a probability vector after temperature, penalties, top-k and min-p."""
    bits = logits.astype(np.float64) / 16.0 - options.presence_penalty * seen
    if options.temperature == 0:
        probs = np.zeros(VOCAB)
        probs[int(np.argmax(bits))] = 1.0
        return probs
    scaled = bits / options.temperature
    probs = np.exp2(scaled - scaled.max())
    if options.top_k:
        # Exactly k survive; ties go to the lower byte value, as with argmax.
        dropped = np.argsort(-probs, kind="stable")[options.top_k :]
        probs[dropped] = 0.0
    if options.min_p:
        probs[probs < options.min_p * probs.max()] = 0.0
    return probs / probs.sum()


def generate(engine: Engine, prompt: bytes, length: int, options: SamplingOptions) -> Iterator[int]:
    """Yield ``length`` sampled bytes that follow ``prompt`` (the prompt itself is not yielded)."""
    options.validate()
    rng = np.random.default_rng(options.seed)
    state = np.zeros(engine.state_size_per_member(), dtype=np.int8)
    seen = np.zeros(VOCAB)
    context = prompt or b"\n"
    for byte in context[:-1]:
        engine.next_logits(byte, state)
        seen[byte] = 1.0
    current = context[-1]
    for _ in range(length):
        seen[current] = 1.0
        logits = engine.next_logits(current, state)
        probs = next_byte_probabilities(logits, options, seen)
        current = int(rng.choice(VOCAB, p=probs))
        yield current


def printable(data: bytes) -> str:
    """Bytes as text for a terminal: UTF-8 where valid, control bytes as \\xNN (newlines and tabs kept)."""
    text = data.decode("utf-8", errors="backslashreplace")
    return "".join(ch if ch in "\n\t" or ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def one_line(data: bytes) -> str:
    """Like :func:`printable`, with newlines and tabs escaped too: for log lines."""
    return printable(data).replace("\n", "\\n").replace("\t", "\\t")
