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

from mlm.data.corpus import Corpus
from mlm.egg import sample as sampling
from mlm.egg.baseline import ORDER_NAMES, cached_baselines
from mlm.egg.cadence import PROGRESS_SECONDS, SAVE_SECONDS, Cadence
from mlm.egg.checkpoint import SCHEDULE_FIELDS, Checkpoint, RunDir
from mlm.egg.config import ModelConfig, preset
from mlm.egg.data import WindowSampler, resolve_data
from mlm.egg.display import Snapshot, choose_display
from mlm.egg.engine import Engine, StepResult
from mlm.egg.evaluate import EVAL_CHUNK, bits_per_byte
from mlm.egg.logbook import ResultRow, TrainingLog, append_result, check_results_file, compact_config
from mlm.egg.reference import n_state, n_weights
from mlm.egg.schedule import DEFAULT_COOLDOWN, StepEstimate, calibrated, has_cooldown, with_cooldown
from mlm.errors import MlmError

SAMPLE_PROMPT = b"// === FILE: src/"
BASELINE_ORDERS = (0, 1, 2)
SAMPLE_LENGTH = 64
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
#: Run-time settings that may differ freely between a run and its resume.
FREE_ON_RESUME = {"threads", "steps", "time_budget"}


@dataclass
class TrainSettings:
    """What ``python -m mlm.egg train`` was asked to do."""

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
    print_every: int = 10
    sample_every: int = 50
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


def expected_sizes(config: ModelConfig) -> tuple[int, int]:
    """Weight and state sizes a checkpoint of ``config`` must have (see :meth:`Engine.training_state`)."""
    return n_weights(config), n_state(config) + 2 * n_weights(config) * config.vote_memory


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
        if self.signal is not None:
            os._exit(EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM)
        self.signal = signum

    @property
    def exit_code(self) -> int:
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
    """One ``train`` invocation: resume or initialise, loop, save, report."""

    def __init__(self, settings: TrainSettings):
        self.s = settings
        self.run_dir = RunDir(settings.run_dir, expected_sizes)
        self.log = TrainingLog(settings.run_dir)
        self.state = RunState()
        self.corpus: Corpus | None = None
        self.engine: Engine | None = None
        self.run_seed = settings.seed
        self.display = choose_display(settings.quiet)
        self.sample_text = ""
        self.baseline_text = ""
        self.baselines: dict[int, float] = {}
        self.rate: float | None = None
        self.saves = Cadence(settings.save_every, None if settings.save_every else settings.save_seconds)
        self.progress = Cadence(settings.print_every, PROGRESS_SECONDS)
        self.first_step = 0
        #: Set once setup is done: an error before it is a failed start.
        self.started = False

    # -- setup -----------------------------------------------------------------------------

    def say(self, message: str) -> None:
        """Show a line and keep it in training.log."""
        self.display.message(message)
        self.log.write(message)

    def _load_data(self) -> None:
        self.corpus, note = resolve_data(self.s.data)
        if note:
            self.say(note)
        c = self.corpus
        self.say(f"data {c.path}: {c.train_bytes:,} train bytes, {c.val_bytes:,} validation bytes"
                 + (f" ({c.n_files - c.n_val_files} train files, {c.n_val_files} validation files)"
                    if c.headered else " (headerless: split by blocks)"))

    def _start_checkpoint(self) -> tuple[Checkpoint | None, str]:
        """The checkpoint to resume from and where it came from, after --fresh / --resume handling."""
        s, rd = self.s, self.run_dir
        if s.fresh and rd.has_checkpoints():
            archive = rd.archive_existing()
            self.display.message(f"--fresh: moved the previous checkpoints to {archive}")
        self.log.write(f"=== start: mlm train (pid {os.getpid()}) {' '.join(sys.argv[1:])}")
        if s.resume == "none":
            if rd.has_checkpoints():
                raise MlmError(f"{s.run_dir} already holds checkpoints and --resume none was given: "
                               "add --fresh to archive them and start over, or drop --resume none")
            return None, ""
        want_best = s.resume == "best" or os.environ.get("EGG_RESUME_BEST") == "1"
        ckpt = rd.best() if want_best else rd.latest()
        for problem in rd.problems:
            self.say(f"skipping {problem.name}: {problem.reason}")
        if ckpt is None and rd.has_checkpoints():
            # Starting over would overwrite files the user may still want to rescue.
            which = "egg.ckpt.best" if want_best else "checkpoint"
            raise MlmError(f"no usable {which} in {s.run_dir} to resume from: add --fresh to archive "
                           "the damaged files and start over" + (", or drop --resume best" if want_best else ""))
        if ckpt is not None and want_best:
            newer = rd.archive_newer_than(ckpt.step)
            if newer:
                self.say(f"resuming from best at step {ckpt.step}: moved newer ring slots to {newer}")
        return ckpt, "egg.ckpt.best" if want_best else "the latest valid slot"

    def _set_aside_other_runs(self, ckpt: Checkpoint) -> None:
        """Move valid files of another model or run seed than ``ckpt``'s out of the ring, saying so.

        They are never resumed, and moving them keeps the run's own saves from overwriting them.
        """
        others = self.run_dir.other_runs(ckpt)
        if not others:
            return
        archive = self.run_dir.archive_files([info.path for info in others])
        for info in others:
            self.say(f"{info.name} (step {info.step}) holds another run than the one resumed "
                     f"({info.other_run}): moved to {archive / info.name}, not resumed")

    def _resume(self, ckpt: Checkpoint) -> None:
        s = self.s
        conflicts = config_conflicts(ckpt.config, s.explicit, s.preset_name)
        if s.seed_explicit and s.seed != ckpt.run_seed:
            conflicts.append(f"seed (checkpoint {ckpt.run_seed}, given {s.seed})")
        if conflicts:
            raise MlmError(f"settings contradict the checkpoint in {s.run_dir}: {'; '.join(conflicts)}"
                           " — drop those flags to resume, or start a new run with --fresh or another --run-dir")
        self._check_same_data(ckpt)
        self.s.config = ckpt.config
        self.run_seed = ckpt.run_seed
        self.engine = Engine(ckpt.config, threads=self.s.threads)
        self.engine.weights[:] = ckpt.weights
        self.engine.load_training_state(ckpt.state)
        self.state.step = ckpt.step
        self.state.best = ckpt.metrics["best_metric"]
        # Without evaluations a carried-over val_bpb would describe older weights than every later file.
        self.state.last_val = ckpt.metrics["val_bpb"] if s.eval_every else None
        self.state.last_train_loss = ckpt.metrics["train_loss"]
        self.state.saved_step = ckpt.step
        cfg = ckpt.config
        if has_cooldown(cfg) and self.s.steps is not None and self.s.steps > cfg.cooldown_end:
            self.say(f"note: this run cooled down for its end at step {cfg.cooldown_end}; past it weights move "
                     "only at the ceiling threshold: start a new run (--fresh or another --run-dir) to train "
                     "longer with a cooldown")
        if ckpt.best_metric_name != self.tracked_name:
            self._restart_best(ckpt.best_metric_name)

    def _check_same_data(self, ckpt: Checkpoint) -> None:
        """A run trains on one corpus: continuing it on other data needs --allow-data-change."""
        trained_on = ckpt.extra.get("data_sha256")
        if trained_on in (None, self.corpus.sha256):
            return
        where = ckpt.extra.get("data_path") or "another file"
        if not self.s.allow_data_change:
            raise MlmError(f"the training data {self.corpus.path} differs from the data the run in {self.s.run_dir} "
                           f"was trained on ({where}): start a new run with --fresh or another --run-dir, or add "
                           "--allow-data-change to continue this model on the new data")
        self.say(f"--allow-data-change: the model trained on {where} continues on {self.corpus.path}")

    def _restart_best(self, old_name: str) -> None:
        """The run tracked another metric: its best value is not comparable, so best starts over, saying so."""
        moved = self.run_dir.archive_files([self.run_dir.best_path]) if self.run_dir.best_path.exists() else None
        why = "--eval-every is now on" if self.s.eval_every else "--eval-every is now off"
        self.state.best = None
        self.say(f"note: this run's best tracked {old_name}, and {why}, so it tracks {self.tracked_name}: best "
                 "starts over" + (f" (the previous egg.ckpt.best is in {moved})" if moved else ""))

    def _setup(self) -> None:
        """Resume or initialise; a start-up error is also written to training.log."""
        try:
            self._start()
        except MlmError as error:
            self.log.write(f"error: {error}")
            raise

    def _start(self) -> None:
        ckpt, origin = self._start_checkpoint()
        self._load_data()
        if ckpt is not None:
            self._resume(ckpt)
            self._set_aside_other_runs(ckpt)
            self.say(f"resume from {origin} at step {ckpt.step}")
        else:
            if self.s.steps is not None:
                self.s.config = with_cooldown(self.s.config, self.s.steps, self.s.cooldown)
            self.engine = Engine(self.s.config, threads=self.s.threads)
            self.engine.init_weights(self.run_seed)
        self.windows = WindowSampler(self.corpus.train, self.s.config.streams, self.s.config.seq_len)
        self._show_baselines()
        if self.s.eval_every and self.corpus.val_bytes < 2:
            raise MlmError("--eval-every needs a validation split, but this corpus has none: "
                           "use a larger corpus or --eval-every 0")

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
        return "val_bpb" if self.s.eval_every else "train_loss"

    def run(self) -> int:
        """Train until the step or time budget is reached or a signal arrives; return the exit code."""
        check_results_file(self.s.results)
        with self._lock_run_dir():
            self._setup()
            if self.s.steps is not None and self.state.step >= self.s.steps:
                # Not silent, and no results row: nothing ran.
                self.say(f"nothing to train: the run in {self.s.run_dir} is at step {self.state.step:,}, which "
                         f"--steps {self.s.steps:,} does not pass; give a larger --steps to continue it, or start "
                         "a new run with --fresh or another --run-dir")
                return 0
            cfg = self.s.config
            self.say(f"config {compact_config(cfg, self.run_seed)} | threads {self.engine.threads} | "
                     f"{cfg.population * cfg.seq_len:,} population-tokens per step")
            started, first_step = time.monotonic(), self.state.step
            self.first_step = first_step
            status, code = "ok", 0
            self.started = True
            self._start_display()
            self.saves.mark()
            self.progress.mark()
            try:
                with StopRequest() as stop:
                    while not self._stopping(stop, started, first_step):
                        self._one_step()
                        self._fix_cooldown_from_speed(started, first_step)
                        self._refresh_display(started)
                    if stop.signal is not None:
                        status, code = "interrupted", stop.exit_code
                        self.say(f"{signal.Signals(stop.signal).name} at step {self.state.step}: "
                                 "saving and stopping")
                    elif self.s.eval_every and self.state.val_step != self.state.step:
                        self._evaluate()  # the results row and the best file reflect the final model
                        self.state.saved_step = None
                    self._save(final=True)
            except Exception as error:
                status = "crash"
                self.log.write(f"error: {error}")  # the terminal gets it once, from the command line
                raise
            finally:
                self.display.stop()
                seconds = time.monotonic() - started
                self._record(status, seconds, self.state.step - first_step)
            self._summary(status, stop.signal, seconds, self.state.step - first_step)
        return code

    def _lock_run_dir(self) -> contextlib.AbstractContextManager:
        """Hold the run directory for this writer (see :meth:`RunDir.lock`)."""
        return self.run_dir.lock()

    def _fix_cooldown_from_speed(self, started: float, first_step: int) -> None:
        """A run with only a time budget fixes its cooldown once, from the speed of its first steps.

        The schedule is stored in the configuration (and so in every checkpoint from now on): a resumed
        run follows it instead of re-estimating, and no step before the cooldown depends on it.
        """
        estimate = self._cooldown_estimate(started, first_step)
        if estimate is not None:
            self._adopt_cooldown(*estimate)

    def _cooldown_estimate(self, started: float, first_step: int) -> tuple[int, int, float] | None:
        """(total steps the budget allows, steps done, seconds) once the speed is calibrated, else None."""
        cfg, budget = self.s.config, self.s.time_budget
        if self.s.steps is not None or budget is None or not self.s.cooldown or has_cooldown(cfg):
            return None
        done, seconds = self.state.step - first_step, time.monotonic() - started
        if not calibrated(done, seconds, budget):
            return None
        return StepEstimate(done, seconds, first_step).total_steps(budget), done, seconds

    def _adopt_cooldown(self, total: int, done: int, seconds: float) -> None:
        """Cool down over the last --cooldown share of ``total`` steps, from the next step on."""
        cfg, budget = self.s.config, self.s.time_budget
        cooled = with_cooldown(cfg, total, self.s.cooldown)
        if not has_cooldown(cooled) or cooled.cooldown_start <= self.state.step:
            return
        engine = Engine(cooled, threads=self.engine.threads)
        engine.weights[:] = self.engine.weights
        engine.load_training_state(self.engine.training_state())
        self.engine, self.s.config = engine, cooled
        self.say(f"cooldown fixed at steps {cooled.cooldown_start:,}-{cooled.cooldown_end:,}: {total:,} steps "
                 f"estimated for the {budget:.0f} s budget from {done:,} steps in {seconds:.1f} s")

    def _start_display(self) -> None:
        if self.s.steps is not None:
            self.display.start(self.s.steps, "steps")
        else:
            self.display.start(self.s.time_budget, "seconds")

    def _refresh_display(self, started: float) -> None:
        st = self.state
        latest_loss = st.interval_losses[-1] if st.interval_losses else st.last_train_loss
        snapshot = Snapshot(step=st.step, train_loss=latest_loss,
                            val_bpb=st.last_val, best=st.best, best_name=self.tracked_name,
                            pop_tok_per_s=self.rate, sample=self.sample_text, baselines=self.baseline_text)
        self.display.update(snapshot, st.step if self.s.steps is not None else time.monotonic() - started)

    def _stopping(self, stop: StopRequest, started: float, first_step: int) -> bool:
        """Is the run over before its next step: budget spent or a signal received?"""
        return self._budget_spent(started, first_step) or stop.signal is not None

    def _budget_spent(self, started: float, first_step: int) -> bool:
        if self.s.steps is not None and self.state.step >= self.s.steps:
            return True
        return self.s.time_budget is not None and time.monotonic() - started >= self.s.time_budget

    def _one_step(self) -> None:
        st, cfg = self.state, self.s.config
        t0 = time.monotonic()
        result = self._train_step(st.step, self.windows.windows(st.step))
        elapsed = time.monotonic() - t0
        st.step += 1
        st.interval_losses.append(result.loss_bits)
        self.rate = cfg.population * cfg.seq_len / max(elapsed, 1e-9)
        if self.progress.due(st.step) or st.step == self.first_step + 1:
            self.say(f"step {st.step} | loss {result.loss_bits:.4f} bits/byte | {self.rate:,.0f} pop-tok/s | "
                     f"{elapsed:.3g} s/step | moved {result.moved}")
            self.progress.mark()
        evaluated = self.s.eval_every and st.step % self.s.eval_every == 0
        if evaluated:
            self._evaluate()
        if self.s.sample_every and st.step % self.s.sample_every == 0:
            sample = self._sample()
            self.sample_text = sampling.printable(sample)
            self.say(f"sample step {st.step}: {sampling.one_line(sample)}")
        # An evaluation is saved at once (cheap next to it), so egg.ckpt.best holds exactly the weights it scored.
        if evaluated or self._save_due(st.step):
            self._save()

    def _save_due(self, step: int) -> bool:
        """Is a checkpoint due after ``step`` (by --save-every, or by the clock)?"""
        return self.saves.due(step)

    def _train_step(self, step: int, windows: np.ndarray) -> StepResult:
        return self.engine.train_step(self.run_seed, step, windows)

    def _evaluate(self) -> None:
        """val_bpb on the first --eval-bytes of the validation split: the same bytes every time."""
        val = self.corpus.val[: self.s.eval_bytes]
        self.state.last_val = bits_per_byte(self.engine.eval_bits(val, EVAL_CHUNK), val.size)
        self.state.val_step = self.state.step
        self.say(f"eval step {self.state.step} | val_bpb {self.state.last_val:.4f}")

    def _sample(self) -> bytes:
        options = sampling.SamplingOptions(temperature=0.8, seed=self.state.step)
        return bytes(sampling.generate(self.engine, SAMPLE_PROMPT, SAMPLE_LENGTH, options))

    def _save(self, final: bool = False) -> None:
        """Write the next ring slot, and the best file when the tracked metric improved."""
        st = self.state
        if st.interval_losses:
            st.last_train_loss = float(np.mean(st.interval_losses))
            st.interval_losses = []
        if final and (st.last_train_loss is None or st.saved_step == st.step):
            return
        tracked = st.last_val if self.s.eval_every else st.last_train_loss
        improved = tracked is not None and (st.best is None or tracked < st.best)
        if improved:
            st.best = tracked
        ckpt = Checkpoint(
            config=self.s.config, step=st.step, run_seed=self.run_seed,
            data_cursor=self.windows.cursor(st.step),
            weights=self.engine.weights.copy(), state=self.engine.training_state(),
            metrics={"train_loss": st.last_train_loss, "val_bpb": st.last_val, "best_metric": st.best},
            best_metric_name=self.tracked_name,
            extra={"data_sha256": self.corpus.sha256, "data_path": str(self.corpus.path.resolve())},
        )
        path = self.run_dir.save(ckpt)
        st.saved_step = st.step
        self.saves.mark()
        wrote_best = improved and self.run_dir.save_best(ckpt)
        self.log.write(f"checkpoint step {st.step} -> {path.name}" + (" and egg.ckpt.best" if wrote_best else ""))

    def _summary(self, status: str, signum: int | None, seconds: float, steps_done: int) -> None:
        """What the run did, on the terminal and in training.log: steps, time, metrics, files, what next."""
        st, run_dir = self.state, self.s.run_dir
        how = f"stopped by {signal.Signals(signum).name}" if signum is not None else "finished"
        lines = [f"{how}: {steps_done:,} steps in {seconds:.1f} s, now at step {st.step:,}"]
        if st.last_train_loss is not None:
            lines.append(f"  train loss  {st.last_train_loss:.4f} bits/byte (mean of the last checkpoint interval)")
        if st.last_val is not None:
            lines.append(f"  val_bpb     {st.last_val:.4f} at step {st.val_step or st.step:,} on the first "
                         f"{min(self.s.eval_bytes, self.corpus.val_bytes):,} validation bytes"
                         f"{versus_baselines(st.last_val, self.baselines)} (eval scores them all)")
        if st.best is not None:
            lines.append(f"  best        {self.tracked_name} {st.best:.4f}")
        if self.baseline_text:
            lines.append(f"  baselines   {self.baseline_text} (Kneser-Ney, validation bits/byte)")
        if st.saved_step is not None:
            lines.append(f"  checkpoints {run_dir}/ (ring egg.ckpt.0-9 and egg.ckpt.best; "
                         f"python -m mlm.egg ckpt list --run-dir {run_dir})")
            lines.append(f"  sample      python -m mlm.egg sample --run-dir {run_dir} --ckpt best")
        if status == "interrupted":
            lines.append("  resume      run the same command again")
        self.say("\n".join(lines))

    def _record(self, status: str, seconds: float, steps_done: int) -> None:
        cfg = self.s.config
        rate = steps_done * cfg.population * cfg.seq_len / seconds if seconds > 0 else 0.0
        row = ResultRow(val_bpb=self.state.last_val, train_loss=self.state.last_train_loss, status=status,
                        steps=self.state.step, seconds=seconds, pop_tok_per_s=rate,
                        run_dir=str(self.s.run_dir), config=compact_config(cfg, self.run_seed),
                        description=self.s.note)
        try:
            append_result(self.s.results, row)
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

