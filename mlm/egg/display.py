"""What `train` shows on the terminal: a live rich view on a TTY, plain lines otherwise.

Plain output (CI logs, ``| tee``) is one line per event with no control codes;
``--quiet`` shows nothing. Every event also goes to training.log, separately.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import click
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


@dataclass
class Snapshot:
    """The numbers the live view shows; None means "not known yet"."""

    step: int = 0
    train_loss: float | None = None
    val_bpb: float | None = None
    best: float | None = None
    best_name: str = "train_loss"
    pop_tok_per_s: float | None = None
    sample: str = ""
    baselines: str = ""


class Display:
    """Base: plain lines on stdout (also the non-TTY behaviour)."""

    def start(self, total: float, unit: str) -> None:
        """Begin a run over ``total`` steps or seconds (``unit``)."""

    def message(self, text: str) -> None:
        click.echo(text)

    def update(self, snapshot: Snapshot, done: float) -> None:
        """New numbers; ``done`` is in the unit given to :meth:`start`."""

    def stop(self) -> None:
        """End of the run."""


class QuietDisplay(Display):
    def message(self, text: str) -> None:
        pass


def format_metric(value: float | None) -> str:
    """A loss or val_bpb for display; "-" when not known yet."""
    return "-" if value is None else f"{value:.4f}"


class LiveDisplay(Display):
    """A progress bar with ETA, the latest numbers and the latest sample, redrawn in place."""

    def __init__(self) -> None:
        self.console = Console()
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 console=self.console)
        self.snapshot = Snapshot()
        self.live: Live | None = None
        self.task = None

    def start(self, total: float, unit: str) -> None:
        self.task = self.progress.add_task("train", total=total)
        self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def update(self, snapshot: Snapshot, done: float) -> None:
        self.snapshot = snapshot
        if self.task is not None:
            self.progress.update(self.task, completed=done)
        if self.live is not None:
            self.live.update(self._render())

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()

    def _render(self) -> Group:
        s = self.snapshot
        table = Table.grid(padding=(0, 2))
        table.add_row("step", str(s.step), "train loss", format_metric(s.train_loss),
                      "val_bpb", format_metric(s.val_bpb))
        table.add_row("pop-tok/s", "-" if s.pop_tok_per_s is None else f"{s.pop_tok_per_s:,.0f}",
                      f"best {s.best_name}", format_metric(s.best), "", "")
        if s.baselines:
            table.add_row("baselines", s.baselines, "", "", "", "")
        parts = [self.progress, table]
        if s.sample:
            parts.append(Panel(s.sample, title="latest sample", expand=False))
        return Group(*parts)


def choose_display(quiet: bool) -> Display:
    """Live view on a terminal, plain lines when piped, nothing with --quiet."""
    if quiet:
        return QuietDisplay()
    return LiveDisplay() if sys.stdout.isatty() else Display()
