"""The training loop: data windows in, EGGROLL steps in C, checkpoints and logs out.

Everything a step depends on (weights, population state, run seed, step
number; the data window is a function of the step) is in each checkpoint, so
a resumed run continues bit for bit as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlm import env
from mlm.data.corpus import Corpus
from mlm.egg import sample as sampling
from mlm.egg.baseline import ORDER_NAMES, cached_baselines
from mlm.egg.cadence import PROGRESS_SECONDS, SAMPLE_SECONDS, SAVE_SECONDS, Cadence
from mlm.egg.checkpoint import SCHEDULE_FIELDS, Checkpoint
from mlm.egg.config import ModelConfig, preset
from mlm.egg.data import WindowSampler, resolve_data
from mlm.egg.display import Snapshot, choose_display
from mlm.egg.engine import Engine, StepResult
from mlm.egg.evaluate import EVAL_CHUNK, bits_per_byte
from mlm.egg.layout import expected_sizes
from mlm.egg.logbook import ResultRow, TrainingLog, append_result, check_results_file, compact_config
from mlm.egg.run_dir import BEST_NAME, RunDir
from mlm.egg.schedule import DEFAULT_COOLDOWN, StepEstimate, calibrated, has_cooldown, with_cooldown
from mlm.errors import MlmError

SAMPLE_PROMPT = b"// === FILE: src/"
BASELINE_ORDERS = (0, 1, 2)
SAMPLE_LENGTH = 64
EXIT_SIGINT, EXIT_SIGTERM = 130, 143


@dataclass(frozen=True)
class TrainSettings:
    """What ``python -m mlm.egg train`` was asked to do; never changed (the run's own values: :class:`RunStart`)."""

    config: ModelConfig
    run_dir: Path = Path("egg-run")
    data: Path | None = None
    #: Model settings the user gave explicitly: they must agree with a checkpoint being resumed.
    explicit: dict[str, int] = field(default_factory=dict)
    #: The preset named explicitly on the command line (None: the default one): it must agree too.
    preset_name: str | None = None
    seed: int = 1
    seed_explicit: bool = False
    threads: int = 1
    steps: int | None = None
    time_budget: float | None = None
    #: Share of the run's steps over which the threshold cools down, fixed when the run starts.
    cooldown: float = DEFAULT_COOLDOWN
    #: Progress line every this many steps; None: every PROGRESS_SECONDS.
    print_every: int | None = None
    #: Sample every this many steps (0: never); None: every SAMPLE_SECONDS.
    sample_every: int | None = None
    #: Checkpoint every this many steps; None: when ``save_seconds`` have passed since the last one.
    save_every: int | None = None
    save_seconds: float = SAVE_SECONDS
    eval_every: int = 0
    eval_bytes: int = 65536
    resume: str = "auto"
    fresh: bool = False
    #: Continue a run on training data whose content differs from its checkpoint's.
    allow_data_change: bool = False
    results: Path = Path("results.tsv")
    note: str = ""
    quiet: bool = False
    #: auto: MPI when started by an MPI launcher with more than one process; off; mpi (see distributed.py).
    distributed: str = "auto"
    #: With more than one MPI rank: sliced (each rank updates a slice of the weights) or replicated.
    mpi_update: str = "sliced"


class StopRequest:
    """SIGINT/SIGTERM ask for a stop at the next step boundary; a second Ctrl-C exits at once.

    Exiting at once is safe: every checkpoint write is atomic, so no file is left half-written.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        """Note the first signal; exit at once on the second."""
        if self.signal is not None:
            os._exit(EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM)
        self.signal = signum

    @property
    def exit_code(self) -> int:
        """The exit code of a run stopped by the signal received: 130 for SIGINT, 143 for SIGTERM."""
        return EXIT_SIGTERM if self.signal == signal.SIGTERM else EXIT_SIGINT


def config_conflicts(ckpt_config: ModelConfig, explicit: dict[str, int], preset_name: str | None = None) -> list[str]:
    """Explicitly given settings, and the explicit preset's values, that differ from the checkpoint's.

    The cooldown fields are left out of the preset's comparison: a run fixes them itself.
    """
    saved = ckpt_config.to_dict()
    conflicts = [f"{k} (checkpoint {saved[k]}, given {v})" for k, v in explicit.items()
                 if k in saved and saved[k] != v]
    if preset_name is not None:
        wanted = preset(preset_name).to_dict()
        conflicts += [f"{k} (checkpoint {saved[k]}, --preset {preset_name} {v})" for k, v in wanted.items()
                      if k not in explicit and k not in SCHEDULE_FIELDS and saved[k] != v]
    return conflicts


@dataclass(frozen=True)
class RunStart:
    """How a run starts: fresh, or resuming ``checkpoint``; decided once, by :func:`resolve_start`."""

    #: The run's configuration: the checkpoint's, or the settings' with the cooldown that --steps fixes.
    config: ModelConfig
    run_seed: int
    #: The checkpoint resumed; None for a fresh run.
    checkpoint: Checkpoint | None = None
    #: Where the checkpoint came from, for the "resume from ..." line.
    origin: str = ""


def resolve_start(settings: TrainSettings, checkpoint: Checkpoint | None, origin: str = "") -> RunStart:
    """The run's configuration and seed: a checkpoint's, which the settings may not contradict, or the settings'.

    Raises MlmError naming every explicitly given setting (and the explicit preset's values) that
    contradicts ``checkpoint``. A fresh run with --steps fixes its cooldown here; one with only a time
    budget fixes it later, from the speed of its steps (:meth:`Trainer._fix_cooldown_from_speed`).
    """
    if checkpoint is None:
        config = settings.config
        if settings.steps is not None:
            config = with_cooldown(config, settings.steps, settings.cooldown)
        return RunStart(config, settings.seed)
    conflicts = config_conflicts(checkpoint.config, settings.explicit, settings.preset_name)
    if settings.seed_explicit and settings.seed != checkpoint.run_seed:
        conflicts.append(f"seed (checkpoint {checkpoint.run_seed}, given {settings.seed})")
    if conflicts:
        raise MlmError(f"settings contradict the checkpoint in {settings.run_dir}: {'; '.join(conflicts)}"
                       " — drop those flags to resume, or start a new run with --fresh or another --run-dir")
    return RunStart(checkpoint.config, checkpoint.run_seed, checkpoint, origin)


@dataclass
class RunState:
    """The mutable bookkeeping of a run between checkpoints."""

    step: int = 0
    best: float | None = None
    last_val: float | None = None
    interval_losses: list[float] = field(default_factory=list)
    last_train_loss: float | None = None
    saved_step: int | None = None
    val_step: int | None = None


class Trainer:
    """One ``train`` invocation: resume or initialise, loop, save, report.

    ``settings`` is what was asked and is never changed; ``config`` and ``run_seed`` are the run's,
    resolved at the start (:func:`resolve_start`) and, for ``config``, changed once more when a
    time-budgeted run fixes its cooldown.
    """

    def __init__(self, settings: TrainSettings):
        self.settings = settings
        self.config = settings.config
        self.run_seed = settings.seed
        self.run_dir = RunDir(settings.run_dir, expected_sizes)
        self.log = TrainingLog(settings.run_dir)
        self.state = RunState()
        self.corpus: Corpus | None = None
        self.engine: Engine | None = None
        self.windows: WindowSampler | None = None
        self.display = choose_display(settings.quiet)
        self.sample_text = ""
        self.baseline_text = ""
        self.baselines: dict[int, float] = {}
        self.rate: float | None = None
        self.saves = Cadence.steps_or_clock(settings.save_every, settings.save_seconds)
        self.progress = Cadence(settings.print_every, PROGRESS_SECONDS)
        self.samples = Cadence.steps_or_clock(settings.sample_every, SAMPLE_SECONDS)
        #: Where this invocation's training began: monotonic seconds and the step.
        self.clock_start = 0.0
        self.first_step = 0
        #: Set once setup is done: an error before it is a failed start.
        self.started = False

    # -- setup -----------------------------------------------------------------------------

    def say(self, message: str) -> None:
        """Show a line and keep it in training.log."""
        self.display.message(message)
        self.log.write(message)

    def _setup(self) -> None:
        """Resume or initialise; a start-up error is also written to training.log."""
        try:
            self._start()
        except MlmError as error:
            self.log.write(f"error: {error}")
            raise

    def _start(self) -> None:
        """Choose the checkpoint, load the data, resolve the run, then build its model and data windows."""
        checkpoint, origin = self._choose_checkpoint()
        self._load_data()
        start = resolve_start(self.settings, checkpoint, origin)
        self.config, self.run_seed = start.config, start.run_seed
        if start.checkpoint is None:
            self.engine = Engine(start.config, threads=self.settings.threads)
            self.engine.init_weights(start.run_seed)
        else:
            self._resume(start.checkpoint)
            self._set_aside_other_runs(start.checkpoint)
            self.say(f"resume from {start.origin} at step {start.checkpoint.step}")
        self.windows = WindowSampler(self.corpus.train, self.config.streams, self.config.seq_len)
        self._show_baselines()
        if self.settings.eval_every and self.corpus.val_bytes < 2:
            raise MlmError("--eval-every needs a validation split, but this corpus has none: "
                           "use a larger corpus or --eval-every 0")

    def _choose_checkpoint(self) -> tuple[Checkpoint | None, str]:
        """The checkpoint to resume from and where it came from, after --fresh / --resume handling."""
        settings, run_dir = self.settings, self.run_dir
        if settings.fresh and run_dir.has_checkpoints():
            archive = run_dir.archive_existing()
            self.display.message(f"--fresh: moved the previous checkpoints to {archive}")
        self.log.write(f"=== start: mlm train (pid {os.getpid()}) {' '.join(sys.argv[1:])}")
        if settings.resume == "none":
            if run_dir.has_checkpoints():
                raise MlmError(f"{settings.run_dir} already holds checkpoints and --resume none was given: "
                               "add --fresh to archive them and start over, or drop --resume none")
            return None, ""
        want_best = settings.resume == "best" or env.resume_best_requested()
        checkpoint = run_dir.best() if want_best else run_dir.latest()
        for problem in run_dir.problems:
            self.say(f"skipping {problem.name}: {problem.reason}")
        if checkpoint is None and run_dir.has_checkpoints():
            # Starting over would overwrite files the user may still want to rescue.
            which = BEST_NAME if want_best else "checkpoint"
            raise MlmError(f"no usable {which} in {settings.run_dir} to resume from: add --fresh to archive "
                           "the damaged files and start over" + (", or drop --resume best" if want_best else ""))
        if checkpoint is not None and want_best:
            newer = run_dir.archive_newer_than(checkpoint.step)
            if newer:
                self.say(f"resuming from best at step {checkpoint.step}: moved newer ring slots to {newer}")
        return checkpoint, BEST_NAME if want_best else "the latest valid slot"

    def _load_data(self) -> None:
        """Open the training data and describe it."""
        self.corpus, note = resolve_data(self.settings.data)
        if note:
            self.say(note)
        corpus = self.corpus
        self.say(f"data {corpus.path}: {corpus.train_bytes:,} train bytes, {corpus.val_bytes:,} validation bytes"
                 + (f" ({corpus.n_files - corpus.n_val_files} train files, {corpus.n_val_files} validation files)"
                    if corpus.headered else " (headerless: split by blocks)"))

    def _resume(self, checkpoint: Checkpoint) -> None:
        """Load the checkpoint's model and bookkeeping, after checking that it trained on this data."""
        self._check_same_data(checkpoint)
        self.engine = Engine(checkpoint.config, threads=self.settings.threads)
        self.engine.weights[:] = checkpoint.weights
        self.engine.load_training_state(checkpoint.state)
        state = self.state
        state.step = checkpoint.step
        state.best = checkpoint.metrics["best_metric"]
        # Without evaluations a carried-over val_bpb would describe older weights than every later file.
        state.last_val = checkpoint.metrics["val_bpb"] if self.settings.eval_every else None
        state.val_step = checkpoint.extra.get("val_step") if self.settings.eval_every else None
        state.last_train_loss = checkpoint.metrics["train_loss"]
        state.saved_step = checkpoint.step
        config, steps = checkpoint.config, self.settings.steps
        if has_cooldown(config) and steps is not None and steps > config.cooldown_end:
            self.say(f"note: this run cooled down for its end at step {config.cooldown_end}; past it weights move "
                     "only at the ceiling threshold: start a new run (--fresh or another --run-dir) to train "
                     "longer with a cooldown")
        if checkpoint.best_metric_name != self.tracked_name:
            self._restart_best(checkpoint.best_metric_name)

    def _check_same_data(self, checkpoint: Checkpoint) -> None:
        """A run trains on one corpus: continuing it on other data needs --allow-data-change."""
        trained_on = checkpoint.extra.get("data_sha256")
        if trained_on in (None, self.corpus.sha256):
            return
        where = checkpoint.extra.get("data_path") or "another file"
        if not self.settings.allow_data_change:
            raise MlmError(f"the training data {self.corpus.path} differs from the data the run in "
                           f"{self.settings.run_dir} was trained on ({where}): start a new run with --fresh or "
                           "another --run-dir, or add --allow-data-change to continue this model on the new data")
        self.say(f"--allow-data-change: the model trained on {where} continues on {self.corpus.path}")

    def _restart_best(self, old_name: str) -> None:
        """The run tracked another metric: its best value is not comparable, so best starts over, saying so."""
        best_path = self.run_dir.best_path
        moved = self.run_dir.archive_files([best_path]) if best_path.exists() else None
        why = "--eval-every is now on" if self.settings.eval_every else "--eval-every is now off"
        self.state.best = None
        self.say(f"note: this run's best tracked {old_name}, and {why}, so it tracks {self.tracked_name}: best "
                 "starts over" + (f" (the previous {BEST_NAME} is in {moved})" if moved else ""))

    def _set_aside_other_runs(self, checkpoint: Checkpoint) -> None:
        """Move valid files of another model or run seed than ``checkpoint``'s out of the ring, saying so.

        They are never resumed, and moving them keeps the run's own saves from overwriting them.
        """
        others = self.run_dir.other_runs(checkpoint)
        if not others:
            return
        archive = self.run_dir.archive_files([info.path for info in others])
        for info in others:
            self.say(f"{info.name} (step {info.step}) holds another run than the one resumed "
                     f"({info.other_run}): moved to {archive / info.name}, not resumed")

    def _show_baselines(self) -> None:
        """The n-gram numbers to beat, once per run (cached per data file after the first time)."""
        if self.corpus.val_bytes < 2:
            return
        self.baselines = cached_baselines(self.corpus, BASELINE_ORDERS)
        self.baseline_text = ", ".join(f"{ORDER_NAMES[k]} {v:.3f}" for k, v in sorted(self.baselines.items()))
        self.say(f"baselines (Kneser-Ney, validation bits/byte): {self.baseline_text}")

    # -- the loop --------------------------------------------------------------------------

    @property
    def tracked_name(self) -> str:
        """The metric that decides "best": val_bpb when validation runs, else the training loss."""
        return "val_bpb" if self.settings.eval_every else "train_loss"

    def run(self) -> int:
        """Train until the step or time budget is reached or a signal arrives; return the exit code."""
        check_results_file(self.settings.results)
        with self._lock_run_dir():
            self._setup()
            if self._nothing_to_train():
                return 0
            return self._train()

    def _nothing_to_train(self) -> bool:
        """Whether --steps is already reached; says so (not silently, and with no results row: nothing ran)."""
        steps, step = self.settings.steps, self.state.step
        if steps is None or step < steps:
            return False
        self.say(f"nothing to train: the run in {self.settings.run_dir} is at step {step:,}, which "
                 f"--steps {steps:,} does not pass; give a larger --steps to continue it, or start "
                 "a new run with --fresh or another --run-dir")
        return True

    def _train(self) -> int:
        """The loop, the final evaluation and save, the results row and the summary; returns the exit code."""
        config = self.config
        self.say(f"config {compact_config(config, self.run_seed)} | threads {self.engine.threads} | "
                 f"{config.population * config.seq_len:,} population-tokens per step")
        self.clock_start, self.first_step = time.monotonic(), self.state.step
        status, code = "ok", 0
        self.started = True
        self._start_display()
        for cadence in (self.saves, self.progress, self.samples):
            cadence.mark()
        try:
            with StopRequest() as stop:
                while not self._stopping(stop):
                    self._one_step()
                    self._fix_cooldown_from_speed()
                    self._refresh_display()
                if stop.signal is not None:
                    status, code = "interrupted", stop.exit_code
                    self.say(f"{signal.Signals(stop.signal).name} at step {self.state.step}: saving and stopping")
                elif self.settings.eval_every and self.state.val_step != self.state.step:
                    self._evaluate()  # the results row and the best file reflect the final model
                    self.state.saved_step = None
                self._save(final=True)
        except Exception as error:
            status = "crash"
            self.log.write(f"error: {error}")  # the terminal gets it once, from the command line
            raise
        finally:
            self.display.stop()
            seconds = time.monotonic() - self.clock_start
            self._record(status, seconds, self.state.step - self.first_step)
        self._summary(status, stop.signal, seconds, self.state.step - self.first_step)
        return code

    def _lock_run_dir(self) -> contextlib.AbstractContextManager:
        """Hold the run directory for this writer (see :meth:`RunDir.lock`)."""
        return self.run_dir.lock()

    def _fix_cooldown_from_speed(self) -> None:
        """A run with only a time budget fixes its cooldown once, shortly before it begins, from the speed
        of the steps so far.

        The schedule is stored in the configuration (and so in every checkpoint from now on): a resumed
        run follows it instead of re-estimating, and no step before the cooldown depends on it.
        """
        estimate = self._cooldown_estimate()
        if estimate is not None:
            self._adopt_cooldown(*estimate)

    def _cooldown_estimate(self) -> tuple[int, int, float] | None:
        """(total steps the budget allows, steps done, seconds) once the speed is calibrated, else None."""
        settings, budget = self.settings, self.settings.time_budget
        if settings.steps is not None or budget is None or not settings.cooldown or has_cooldown(self.config):
            return None
        done, seconds = self.state.step - self.first_step, time.monotonic() - self.clock_start
        if not calibrated(done, seconds, budget, settings.cooldown):
            return None
        return StepEstimate(done, seconds, self.first_step).total_steps(budget), done, seconds

    def _adopt_cooldown(self, total: int, done: int, seconds: float) -> None:
        """Cool down over the last --cooldown share of ``total`` steps, from the next step on."""
        cooled = with_cooldown(self.config, total, self.settings.cooldown)
        if not has_cooldown(cooled) or cooled.cooldown_start <= self.state.step:
            return
        engine = Engine(cooled, threads=self.engine.threads)
        engine.weights[:] = self.engine.weights
        engine.load_training_state(self.engine.training_state())
        self.engine, self.config = engine, cooled
        self.say(f"cooldown fixed at steps {cooled.cooldown_start:,}-{cooled.cooldown_end:,}: {total:,} steps "
                 f"estimated for the {self.settings.time_budget:.0f} s budget from {done:,} steps in {seconds:.1f} s")

    def _start_display(self) -> None:
        """Start the live view, measured in steps under --steps, else in seconds of the budget."""
        if self.settings.steps is not None:
            self.display.start(self.settings.steps, "steps")
        else:
            self.display.start(self.settings.time_budget, "seconds")

    def _refresh_display(self) -> None:
        """Show the latest step, losses, speed and sample in the live view."""
        state = self.state
        latest_loss = state.interval_losses[-1] if state.interval_losses else state.last_train_loss
        snapshot = Snapshot(step=state.step, train_loss=latest_loss,
                            val_bpb=state.last_val, best=state.best, best_name=self.tracked_name,
                            pop_tok_per_s=self.rate, sample=self.sample_text, baselines=self.baseline_text)
        progress = state.step if self.settings.steps is not None else time.monotonic() - self.clock_start
        self.display.update(snapshot, progress)

    def _stopping(self, stop: StopRequest) -> bool:
        """Is the run over before its next step: budget spent or a signal received?"""
        return self._budget_spent() or stop.signal is not None

    def _budget_spent(self) -> bool:
        """Whether --steps is reached or the --time-budget has run out."""
        steps, budget = self.settings.steps, self.settings.time_budget
        if steps is not None and self.state.step >= steps:
            return True
        return budget is not None and time.monotonic() - self.clock_start >= budget

    def _one_step(self) -> None:
        """One training step, then the progress line, evaluation, sample and checkpoint that are due."""
        state, config = self.state, self.config
        t0 = time.monotonic()
        result = self._train_step(state.step, self.windows.windows(state.step))
        elapsed = time.monotonic() - t0
        state.step += 1
        state.interval_losses.append(result.loss_bits)
        self.rate = config.population * config.seq_len / max(elapsed, 1e-9)
        if self.progress.due(state.step) or state.step == self.first_step + 1:
            self.say(f"step {state.step} | loss {result.loss_bits:.4f} bits/byte | {self.rate:,.0f} pop-tok/s | "
                     f"{elapsed:.3g} s/step | moved {result.moved}")
            self.progress.mark()
        evaluated = self.settings.eval_every and state.step % self.settings.eval_every == 0
        if evaluated:
            self._evaluate()
        if self._sample_due(state.step):
            self._show_sample()
            self.samples.mark()
        # An evaluation is saved at once (cheap next to it), so egg.ckpt.best holds exactly the weights it scored.
        if evaluated or self._save_due(state.step):
            self._save()

    def _sample_due(self, step: int) -> bool:
        """Is a sample due after ``step`` (by --sample-every, or by the clock)?"""
        return self.samples.due(step)

    def _save_due(self, step: int) -> bool:
        """Is a checkpoint due after ``step`` (by --save-every, or by the clock)?"""
        return self.saves.due(step)

    def _train_step(self, step: int, windows: np.ndarray) -> StepResult:
        """One EGGROLL step of the whole population on ``windows``."""
        return self.engine.train_step(self.run_seed, step, windows)

    def _evaluate(self) -> None:
        """val_bpb on the first --eval-bytes of the validation split: the same bytes every time."""
        val = self.corpus.val[: self.settings.eval_bytes]
        with self.engine.averaged() as engine:
            self.state.last_val = bits_per_byte(engine.eval_bits(val, EVAL_CHUNK), val.size)
        self.state.val_step = self.state.step
        self.say(f"eval step {self.state.step} | val_bpb {self.state.last_val:.4f}")

    def _show_sample(self) -> None:
        """Generate a sample, show it in the live view and log it on one line."""
        sample = self._sample()
        self.sample_text = sampling.printable(sample)
        self.say(f"sample step {self.state.step}: {sampling.one_line(sample)}")

    def _sample(self) -> bytes:
        """SAMPLE_LENGTH bytes after SAMPLE_PROMPT, seeded by the step."""
        options = sampling.SamplingOptions(temperature=0.8, seed=self.state.step)
        with self.engine.averaged() as engine:
            return bytes(sampling.generate(engine, SAMPLE_PROMPT, SAMPLE_LENGTH, options))

    def _save(self, final: bool = False) -> None:
        """Write the next ring slot, and the best file when the tracked metric improved."""
        state = self.state
        if state.interval_losses:
            state.last_train_loss = float(np.mean(state.interval_losses))
            state.interval_losses = []
        if final and (state.last_train_loss is None or state.saved_step == state.step):
            return
        tracked = state.last_val if self.settings.eval_every else state.last_train_loss
        improved = tracked is not None and (state.best is None or tracked < state.best)
        if improved:
            state.best = tracked
        checkpoint = Checkpoint(
            config=self.config, step=state.step, run_seed=self.run_seed,
            data_cursor=self.windows.cursor(state.step),
            weights=self.engine.weights.copy(), state=self.engine.training_state(),
            metrics={"train_loss": state.last_train_loss, "val_bpb": state.last_val, "best_metric": state.best},
            best_metric_name=self.tracked_name,
            extra={"data_sha256": self.corpus.sha256, "data_path": str(self.corpus.path.resolve()),
                   **({} if state.val_step is None else {"val_step": state.val_step})},
        )
        path = self.run_dir.save(checkpoint)
        state.saved_step = state.step
        self.saves.mark()
        wrote_best = improved and self.run_dir.save_best(checkpoint)
        self.log.write(f"checkpoint step {state.step} -> {path.name}" + (f" and {BEST_NAME}" if wrote_best else ""))

    def _summary(self, status: str, signum: int | None, seconds: float, steps_done: int) -> None:
        """What the run did, on the terminal and in training.log: steps, time, metrics, files, what next."""
        state, run_dir = self.state, self.settings.run_dir
        how = f"stopped by {signal.Signals(signum).name}" if signum is not None else "finished"
        lines = [f"{how}: {steps_done:,} steps in {seconds:.1f} s, now at step {state.step:,}"]
        if state.last_train_loss is not None:
            lines.append(f"  train loss  {state.last_train_loss:.4f} bits/byte (mean of the last checkpoint interval)")
        if state.last_val is not None:
            lines.append(f"  val_bpb     {state.last_val:.4f} at step {state.val_step or state.step:,} on the first "
                         f"{min(self.settings.eval_bytes, self.corpus.val_bytes):,} validation bytes"
                         f"{versus_baselines(state.last_val, self.baselines)} (eval scores them all)")
        if state.best is not None:
            lines.append(f"  best        {self.tracked_name} {state.best:.4f}")
        if self.baseline_text:
            lines.append(f"  baselines   {self.baseline_text} (Kneser-Ney, validation bits/byte)")
        if state.saved_step is not None:
            lines.append(f"  checkpoints {run_dir}/ (ring egg.ckpt.0-9 and {BEST_NAME}; "
                         f"python -m mlm.egg ckpt list --run-dir {run_dir})")
            lines.append(f"  sample      python -m mlm.egg sample --run-dir {run_dir} --ckpt best")
        if status == "interrupted":
            lines.append("  resume      run the same command again")
        self.say("\n".join(lines))

    def _record(self, status: str, seconds: float, steps_done: int) -> None:
        """Append the run's row to results.tsv (a warning if that fails) and its end to training.log."""
        config, settings = self.config, self.settings
        rate = steps_done * config.population * config.seq_len / seconds if seconds > 0 else 0.0
        row = ResultRow(val_bpb=self.state.last_val, train_loss=self.state.last_train_loss, status=status,
                        steps=self.state.step, seconds=seconds, pop_tok_per_s=rate,
                        run_dir=str(settings.run_dir), config=compact_config(config, self.run_seed),
                        description=settings.note)
        try:
            append_result(settings.results, row)
        except MlmError as error:
            self.say(f"warning: {error}")
        self.log.write(f"=== end: {status} at step {self.state.step} after {seconds:.1f}s")


def versus_baselines(value: float, baselines: dict[int, float]) -> str:
    """``value`` placed among the n-gram baselines: ``, below unigram and bigram, above trigram``."""
    below = [ORDER_NAMES[k] for k, v in sorted(baselines.items()) if value < v]
    above = [ORDER_NAMES[k] for k, v in sorted(baselines.items()) if value >= v]
    parts = ([f"below {' and '.join(below)}"] if below else []) + ([f"above {' and '.join(above)}"] if above else [])
    return f", {', '.join(parts)}" if parts else ""


def train(settings: TrainSettings) -> int:
    """Run training; returns the process exit code (0, 130 after SIGINT, 143 after SIGTERM).

    Under an MPI launcher with more than one process, every process runs its share of each step
    (mlm/egg/distributed.py). A start that fails in a run directory it created leaves nothing
    behind (the error is on the terminal).
    """
    from mlm.egg import distributed

    comm = distributed.world_communicator(settings.distributed)
    created = not settings.run_dir.exists()
    trainer = Trainer(settings) if comm is None else distributed.DistributedTrainer(settings, comm)
    try:
        return trainer.run()
    except MlmError:
        if created and not trainer.started and (comm is None or comm.Get_rank() == 0):
            trainer.run_dir.remove_if_unused()
        raise

