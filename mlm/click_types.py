"""Click parameter types shared by the command lines: numbers that must be finite, seeds."""

from __future__ import annotations

import math
import os

import click

#: Seeds are unsigned 64-bit integers in the C core and in checkpoints.
SEED = click.IntRange(0, 2**64 - 1)
#: Worker threads: at least one, at most one per core (more only slow the loop down).
THREADS = click.IntRange(1, os.cpu_count() or 1)


class FiniteFloatRange(click.FloatRange):
    """A float in a range that is also finite: click.FloatRange lets NaN through (NaN fails no comparison)."""

    name = "finite float range"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)
