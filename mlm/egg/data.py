"""Training data for the EGGROLL loop: which corpus, and the windows each step reads."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from mlm.data.corpus import Corpus, load_corpus
from mlm.errors import MlmError

DEFAULT_DATA = Path("input.txt")
BUNDLED_NAME = "threejs-math.txt"


def bundled_corpus_path() -> Path:
    """The small corpus shipped in the package: Three.js r170 ``src/math`` (MIT, notice beside it)."""
    return Path(str(resources.files("mlm.egg") / "corpus" / BUNDLED_NAME))


def resolve_data(path: Path | None) -> tuple[Corpus, str | None]:
    """Load ``path``, or ./input.txt, or the bundled corpus; return it and a note for the user.

    An explicitly named file must exist; only the default falls back to the bundled corpus.
    """
    if path is not None:
        return load_corpus(path), None
    if DEFAULT_DATA.exists():
        return load_corpus(DEFAULT_DATA), None
    note = (f"no ./input.txt: training on the bundled Three.js src/math sample ({BUNDLED_NAME}); "
            "build a real corpus with ./scripts/build_threejs_dataset.sh")
    return load_corpus(bundled_corpus_path()), note


@dataclass(frozen=True)
class WindowSampler:
    """The data windows of every step, as a pure function of the step number.

    Stream ``s`` starts at ``s * span // streams`` and advances ``seq_len``
    bytes per step, wrapping around: so the data a step sees depends only on
    the step, which is what makes resume bit-exact without storing positions.
    """

    train: np.ndarray
    streams: int
    seq_len: int

    def __post_init__(self) -> None:
        if self.train.size < self.seq_len + 1:
            raise MlmError(
                f"training data has {self.train.size} bytes, fewer than one window of seq_len + 1 = "
                f"{self.seq_len + 1}: use more data or a smaller --seq-len")

    @property
    def span(self) -> int:
        """Number of distinct window start positions."""
        return self.train.size - self.seq_len

    def cursor(self, step: int) -> int:
        """Bytes each stream has advanced before ``step`` (recorded in checkpoints)."""
        return step * self.seq_len

    def windows(self, step: int) -> np.ndarray:
        """The step's windows, streams x (seq_len + 1) bytes: stream s's is train[start_s : start_s + seq_len + 1]."""
        starts = (np.arange(self.streams, dtype=np.int64) * self.span // self.streams
                  + self.cursor(step)) % self.span
        # One gather, not a slice per stream: this runs on one thread between the core's parallel steps.
        return np.asarray(self.train)[starts[:, None] + np.arange(self.seq_len + 1)]
