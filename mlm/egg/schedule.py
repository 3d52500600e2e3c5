"""The threshold cooldown: the last part of a run's steps, fixed once and stored in its configuration.

The C core raises the vote threshold over ``[cooldown_start, cooldown_end)`` so that the rate of
weight moves falls linearly, as a learning rate decays towards zero at the end of a backprop run. The
window comes from the run's step budget, never from the clock: with ``--steps`` it is known at the
start; with only ``--time-budget`` it is fixed once, shortly before it would begin, from the speed of
the steps so far (so a machine busier or quieter at the start than later barely moves it), and stored
in the checkpoint, so a resumed run follows the same schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlm.egg.config import ModelConfig

#: Share of a run's steps spent cooling down unless --cooldown says otherwise: none. A cooldown pays at
#: the end of a run (0.07 bits/byte at 190,934 steps: docs/results.md, "Late in a run"), but a run trained
#: past its cooldown barely moves, and running `train` again to continue a run must keep learning.
DEFAULT_COOLDOWN = 0.0
#: A time-budgeted run fixes its cooldown this share of its budget before the cooldown would begin
#: (and after at least CALIBRATION_STEPS steps), from its average speed until then. Estimated from their
#: first 3% instead, as before, a 30-minute run ended 84% through its cooldown and a 2-hour run, whose
#: speed changed with the machine's load, 81% through it (docs/results.md).
COOLDOWN_LEAD = 0.05
CALIBRATION_STEPS = 20


def with_cooldown(config: ModelConfig, total_steps: int, fraction: float) -> ModelConfig:
    """``config`` cooling down over the last ``fraction`` of ``total_steps`` (none when that is < 1 step)."""
    length = round(total_steps * fraction)
    if length < 1 or total_steps < 2:
        return config.replace(cooldown_start=0, cooldown_end=0)
    return config.replace(cooldown_start=total_steps - min(length, total_steps - 1), cooldown_end=total_steps)


def has_cooldown(config: ModelConfig) -> bool:
    """Whether ``config``'s schedule has a cooldown fixed."""
    return config.cooldown_end > 0


@dataclass(frozen=True)
class StepEstimate:
    """How many steps a time budget buys, from the speed measured so far in this invocation."""

    steps_done: int  # steps run in this invocation
    seconds: float  # the seconds they took
    first_step: int  # the step this invocation started at

    def total_steps(self, budget_seconds: float) -> int:
        """The run's final step if the rest of the budget runs at the measured speed."""
        per_second = self.steps_done / max(self.seconds, 1e-9)
        return self.first_step + max(self.steps_done + 1, round(per_second * budget_seconds))


def calibrated(steps_done: int, seconds: float, budget_seconds: float, cooldown: float) -> bool:
    """Is it time for a time-budgeted run to fix a cooldown of the last ``cooldown`` share: COOLDOWN_LEAD of
    the budget before that share begins (or as soon as CALIBRATION_STEPS steps are timed, if later)?"""
    due = max(1.0 - cooldown - COOLDOWN_LEAD, COOLDOWN_LEAD) * budget_seconds
    return steps_done >= CALIBRATION_STEPS and seconds >= due
