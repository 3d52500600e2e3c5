"""How often a run writes checkpoints, progress lines and samples: every N steps, or by the clock.

A ``small`` step takes milliseconds, a ``reference`` step seconds: a fixed step interval either
fsyncs files (or prints lines) several times a second or leaves minutes between them. By default
all three follow the clock (checkpoints also come at every evaluation, at the end and on a signal);
``--save-every``, ``--print-every`` and ``--sample-every`` ask for a step interval instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

#: Default seconds between checkpoints: the ring of 10 then spans the last five minutes.
SAVE_SECONDS = 30.0
#: A progress line at least this often, however long a step takes (without --print-every, this often).
PROGRESS_SECONDS = 10.0
#: Default seconds between samples of a run (without --sample-every).
SAMPLE_SECONDS = 60.0


@dataclass
class Cadence:
    """Due every ``every`` steps and/or once ``seconds`` have passed since the last :meth:`mark`."""

    every: int | None
    seconds: float | None
    last: float = field(default_factory=time.monotonic)

    def due(self, step: int) -> bool:
        by_steps = self.every is not None and step % self.every == 0
        return by_steps or (self.seconds is not None and time.monotonic() - self.last >= self.seconds)

    @classmethod
    def steps_or_clock(cls, every: int | None, seconds: float) -> Cadence:
        """Every ``every`` steps when given (0: never), else every ``seconds`` of the clock."""
        return cls(every or None, seconds if every is None else None)

    def mark(self) -> None:
        """The event just happened: the clock starts again."""
        self.last = time.monotonic()
