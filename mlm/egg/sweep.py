"""Sweeps: many training runs of equal wall-clock cost, one results.tsv row each.

``python -m mlm.egg sweep CONFIG.toml`` reads a TOML file such as ``sweeps/example.toml``::

    budget_seconds = 60         # required: seconds of training per run, the same for every run
    eval_every = 50             # validation interval in steps [default: 50]
    data = "input.txt"          # optional: the corpus [default: as train, ./input.txt else the bundled sample]
    run_root = "sweep-runs"     # each run trains in run_root/<name> [default: sweep-runs]
    threads = 2                 # optional: worker threads per run [default: all cores]

    [base]                      # train options shared by every run
    preset = "small"

    [grid]                      # optional: one run per point of the cartesian product
    population = [128, 256]
    noise_shift = [2, 3]

    [[runs]]                    # optional: explicit runs, run after the grid's
    name = "wide"               # optional [default: its options, e.g. hidden=256]
    hidden = 256

Option names are ``train``'s long options with underscores (``seq_len`` for ``--seq-len``);
a grid point or an explicit run overrides ``[base]``. Grid runs are named after their grid
values (``population=128,noise_shift=2``). The sweep sets ``--run-dir``, ``--time-budget``,
``--eval-every``, ``--note``, ``--results``, ``--quiet``, ``--data`` and ``--threads`` itself;
``steps``, ``resume`` and ``fresh`` are refused because every run must cost the same time.
Relative paths are relative to the current directory, like train's own options.

Each run is ``python -m mlm.egg train --run-dir RUN_ROOT/NAME --time-budget B --eval-every E
--note sweep:NAME --results RESULTS --quiet [options]``, one after the other. ``train``
evaluates once more at the end when its last step was not an evaluation step, so each run
writes exactly one row and that row's val_bpb is the final model's.

Resuming: a run is identified by its note ``sweep:NAME`` and its run directory. One with an
``ok`` row in RESULTS is skipped; any other whose directory exists (interrupted, crashed, or
killed before writing its row) starts over with ``--fresh`` (old checkpoints archived), so
every row costs the same. After changing ``[base]``, use a new ``run_root``.
"""

from __future__ import annotations

import itertools
import math
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from mlm.egg import cli
from mlm.egg.logbook import RESULTS_COLUMNS, check_results_file
from mlm.errors import MlmError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

TOP_KEYS = ("budget_seconds", "eval_every", "data", "run_root", "threads", "base", "grid", "runs")
#: train options the sweep sets itself, or that would give runs unequal costs.
RESERVED = frozenset({"run_dir", "time_budget", "eval_every", "note", "results", "quiet", "data", "threads",
                      "steps", "resume", "fresh"})
DEFAULT_EVAL_EVERY = 50
DEFAULT_RUN_ROOT = "sweep-runs"
EXPLICIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=,+-]*")
#: train's exit codes after SIGINT/SIGTERM, and a child killed by those signals before its handler was set.
INTERRUPTED = frozenset({130, 143, -signal.SIGINT, -signal.SIGTERM})

Scalar = str | int | float


@dataclass(frozen=True)
class SweepRun:
    """One experiment: a name and the train options (TOML names) it runs with."""

    name: str
    options: dict[str, Scalar]

    @property
    def note(self) -> str:
        return f"sweep:{self.name}"


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep configuration."""

    budget_seconds: float
    eval_every: int
    data: Path | None
    run_root: Path
    threads: int | None
    runs: tuple[SweepRun, ...]

    def run_dir(self, run: SweepRun) -> Path:
        return self.run_root / run.name


@dataclass(frozen=True)
class PlannedRun:
    """A run and what the sweep will do with it."""

    run: SweepRun
    done: bool
    command: list[str]


def train_options() -> dict[str, click.Option]:
    """The train options a sweep may set, by TOML name (``--seq-len`` -> ``seq_len``).

    Read from the ``train`` command itself so new train options are sweepable at once; flags
    are left out because a TOML value cannot say "absent" the way a flag does.
    """
    options = {}
    for param in cli.train.params:
        long = [opt for opt in param.opts if opt.startswith("--")]
        if isinstance(param, click.Option) and long and not param.is_flag:
            key = long[0][2:].replace("-", "_")
            if key not in RESERVED:
                options[key] = param
    return options


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise MlmError(f"sweep config {path} does not exist: pass a .toml file (see sweeps/example.toml)") from None
    except OSError as error:
        raise MlmError(f"cannot read sweep config {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise MlmError(f"{path} is not valid TOML: {error}") from None


def _positive(path: Path, key: str, value: object, integer: bool) -> int | float:
    """``value`` as a positive int (or number), else a clear error."""
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        raise MlmError(f"{path}: {key} must be a positive {'integer' if integer else 'number'} (got {value!r})")
    return value if integer else float(value)


def _text(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise MlmError(f"{path}: {key} must be a non-empty string (got {value!r})")
    return value


def _check_option(path: Path, where: str, key: str, value: object, options: dict[str, click.Option]) -> Scalar:
    """Check one option against train's own parameter type, as train will parse it."""
    if key not in options:
        raise MlmError(f"{path}: {where}.{key} is not a train option a sweep can set; "
                       f"use one of: {', '.join(sorted(options))}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise MlmError(f"{path}: {where}.{key} must be a number or a string (got {value!r})")
    try:
        options[key].type.convert(str(value), options[key], None)
    except click.BadParameter as error:
        raise MlmError(f"{path}: {where}.{key} = {value!r}: {error.format_message()}") from None
    return value


def _table(path: Path, where: str, value: object) -> dict:
    if not isinstance(value, dict):
        raise MlmError(f"{path}: {where} must be a table")
    return value


def _options(path: Path, where: str, table: dict, options: dict[str, click.Option]) -> dict[str, Scalar]:
    return {key: _check_option(path, where, key, value, options) for key, value in table.items()}


def run_name(options: dict[str, Scalar]) -> str:
    """A filesystem-safe name from option values: ``population=128,noise_shift=2``."""
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", ",".join(f"{key}={value}" for key, value in options.items()))


def _grid_runs(path: Path, grid: object, base: dict[str, Scalar],
               options: dict[str, click.Option]) -> list[SweepRun]:
    """One run per point of the grid's cartesian product, in the order the file lists the values."""
    if grid is None:
        return []
    grid = _table(path, "[grid]", grid)
    if not grid:
        raise MlmError(f"{path}: [grid] is empty: give each swept option a list of values, "
                       "e.g. population = [128, 256]")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise MlmError(f"{path}: grid.{key} must be a non-empty list of values (got {values!r})")
        for value in values:
            _check_option(path, "grid", key, value, options)
    points = (dict(zip(grid, combination, strict=True)) for combination in itertools.product(*grid.values()))
    return [SweepRun(run_name(point), {**base, **point}) for point in points]


def _explicit_runs(path: Path, runs: object, base: dict[str, Scalar],
                   options: dict[str, click.Option]) -> list[SweepRun]:
    """The ``[[runs]]`` entries, each named explicitly or after its own options."""
    if runs is None:
        return []
    if not isinstance(runs, list):
        raise MlmError(f"{path}: runs must be an array of tables, written [[runs]]")
    result = []
    for i, entry in enumerate(runs):
        entry = dict(_table(path, f"runs[{i}]", entry))
        name = entry.pop("name", None)
        if name is not None and not (isinstance(name, str) and EXPLICIT_NAME.fullmatch(name)):
            raise MlmError(f"{path}: runs[{i}].name {name!r} must be usable as a directory name: letters, digits "
                           "and . _ = , + - starting with a letter or digit")
        own = _options(path, f"runs[{i}]", entry, options)
        result.append(SweepRun(name or run_name(own) or "base", {**base, **own}))
    return result


def load_sweep(path: Path) -> Sweep:
    """Parse and check a sweep configuration; every mistake is one :class:`MlmError` line."""
    table = _read_toml(path)
    unknown = sorted(set(table) - set(TOP_KEYS))
    if unknown:
        raise MlmError(f"{path}: unknown key {', '.join(unknown)}; the keys are {', '.join(TOP_KEYS)}")
    if "budget_seconds" not in table:
        raise MlmError(f"{path}: budget_seconds is missing: give the seconds of training per run")
    options = train_options()
    base = _options(path, "base", _table(path, "[base]", table.get("base", {})), options)
    runs = _grid_runs(path, table.get("grid"), base, options) + _explicit_runs(path, table.get("runs"), base, options)
    if not runs:
        raise MlmError(f"{path} defines no runs: add a [grid] table or [[runs]] entries")
    names = [run.name for run in runs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise MlmError(f"{path}: several runs are named {', '.join(repeated)}: give them distinct names")
    return Sweep(
        budget_seconds=_positive(path, "budget_seconds", table["budget_seconds"], integer=False),
        eval_every=_positive(path, "eval_every", table.get("eval_every", DEFAULT_EVAL_EVERY), integer=True),
        data=Path(_text(path, "data", table["data"])) if "data" in table else None,
        run_root=Path(_text(path, "run_root", table.get("run_root", DEFAULT_RUN_ROOT))),
        threads=_positive(path, "threads", table["threads"], integer=True) if "threads" in table else None,
        runs=tuple(runs),
    )


def train_command(sweep: Sweep, run: SweepRun, results: Path, fresh: bool) -> list[str]:
    """The ``python -m mlm.egg train`` command line of one run."""
    command = [sys.executable, "-m", "mlm.egg", "train", "--run-dir", str(sweep.run_dir(run)),
               "--time-budget", str(sweep.budget_seconds), "--eval-every", str(sweep.eval_every),
               "--note", run.note, "--results", str(results), "--quiet"]
    if sweep.data is not None:
        command += ["--data", str(sweep.data)]
    if sweep.threads is not None:
        command += ["--threads", str(sweep.threads)]
    if fresh:
        command.append("--fresh")
    for key, value in run.options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    return command


def read_results(path: Path) -> list[dict[str, str]]:
    """The rows of a results.tsv as dicts by column name (none when the file does not exist)."""
    if not path.exists():
        return []
    check_results_file(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()[1:]
    # Not strict: a row cut short by a crash mid-write still has its leading fields.
    return [dict(zip(RESULTS_COLUMNS, line.split("\t"), strict=False)) for line in lines if line.strip()]


def plan(sweep: Sweep, results: Path) -> list[PlannedRun]:
    """Which runs are done, and the command of each (with --fresh where a previous attempt left files)."""
    done = {(row.get("description"), row.get("run_dir")) for row in read_results(results) if row.get("status") == "ok"}
    planned = []
    for run in sweep.runs:
        run_dir = sweep.run_dir(run)
        finished = (run.note, str(run_dir)) in done
        planned.append(PlannedRun(run, finished, train_command(sweep, run, results, fresh=run_dir.exists())))
    return planned


def _train(command: list[str]) -> int:
    """Run one training process and return its exit code.

    SIGTERM sent to the sweep alone (a scheduler, ``kill``) is passed on to the run, which saves and
    exits with 143; the sweep waits for it and stops with that code, leaving no run behind.
    """
    with subprocess.Popen(command) as process:
        previous = signal.signal(signal.SIGTERM, lambda signum, _frame: process.send_signal(signum))
        try:
            return process.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the child too: let it save its checkpoint and its 'interrupted' row.
            process.wait()
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)


def summary(sweep: Sweep, results: Path) -> str:
    """The sweep's runs as a table sorted by val_bpb (runs without a number last)."""
    latest = {(row.get("description"), row.get("run_dir")): row for row in read_results(results)}
    rows = [(run.name, latest.get((run.note, str(sweep.run_dir(run))), {})) for run in sweep.runs]

    def val_bpb(row: dict[str, str]) -> float:
        try:
            return float(row.get("val_bpb", ""))
        except ValueError:
            return math.inf

    rows.sort(key=lambda item: val_bpb(item[1]))
    lines = [f"{'val_bpb':>9}  {'train_loss':>10}  {'steps':>7}  {'status':<11}  run"]
    for name, row in rows:
        lines.append(f"{row.get('val_bpb', '-'):>9}  {row.get('train_loss', '-'):>10}  {row.get('steps', '-'):>7}  "
                     f"{row.get('status', 'no row'):<11}  {name}")
    return "\n".join(lines)


def run_sweep(config: Path, results: Path, dry_run: bool = False) -> int:
    """Run every run of ``config`` not yet done; return 0, 1 when a run failed, or train's signal exit code."""
    sweep = load_sweep(config)
    check_results_file(results)
    planned = plan(sweep, results)
    failed = []
    for i, item in enumerate(planned, 1):
        if item.done:
            click.echo(f"skip {item.run.name} (done)")
            continue
        click.echo(f"[{i}/{len(planned)}] {item.run.name}: {shlex.join(item.command)}")
        if dry_run:
            continue
        code = _train(item.command)
        if code in INTERRUPTED:
            click.echo(f"run {item.run.name} was interrupted: re-run the sweep to continue", err=True)
            return code
        if code != 0:
            failed.append(item.run.name)
            click.echo(f"run {item.run.name} failed (exit {code}); continuing with the next run", err=True)
    if not dry_run:
        click.echo(summary(sweep, results))
    if failed:
        click.echo(f"failed runs: {', '.join(failed)}", err=True)
    return 1 if failed else 0
