"""Training across processes and machines with MPI: ``mpiexec -n N python -m mlm.egg train``.

Every rank holds the whole model and reads the same data. The pairs of each step are split into N
fixed, contiguous shares (:func:`pair_shares`); a rank runs only its share's members, whose recurrent
state lives on that rank for the whole run. Per step the ranks all-gather their members' losses in
rank order (the fitness ranks every pair against all pairs). Then, by default (``--mpi-update sliced``),
each rank applies the update to a fixed, contiguous slice of the weights (:func:`task_shares`: the
update's tasks, balanced by their work) and the ranks all-gather what moved, two bits per weight
(:func:`share_moves`), so every rank ends the step with the same weights while doing 1/N of the update;
a slice's vote memory lives on its rank. With ``--mpi-update replicated`` every rank applies the whole
update instead and nothing more is sent. Either way the run is bit-identical to a one-process run.

Only rank 0 writes (training.log, results.tsv, samples, checkpoints); for a checkpoint it gathers
every rank's member state (and with a sliced update every slice's vote memory), so the file is the one a
one-process run writes and resumes under any N; on resume every rank receives all of it from rank 0.
The job is all-or-nothing: an exception on any rank, or a rank that does not answer within the
exchange deadline, aborts every rank (``MPI_Abort``); re-running the command resumes from the last
checkpoint. SIGINT/SIGTERM on any rank travels in the next exchange, so every rank stops after the
same step and rank 0 saves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import os
import socket
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, NoReturn

import numpy as np

from mlm import __version__, env
from mlm.egg.data import WindowSampler, resolve_data
from mlm.egg.display import QuietDisplay
from mlm.egg.engine import Engine, StepResult, kernel_name, packed_moves_size
from mlm.egg.train import StopRequest, Trainer, TrainSettings
from mlm.errors import MlmError

MODES = ("auto", "off", "mpi")
UPDATES = ("sliced", "replicated")
#: Set by MPI launchers (MPICH/Hydra and Slurm's PMI, Open MPI, MVAPICH, srun) to the number of processes:
#: `auto` imports MPI only when one of them says more than one, so a plain run never loads an MPI library.
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")
INSTALL_HINT = 'install the MPI extra: pip install "mlm[mpi]" (mpi4py and the MPICH runtime)'
#: Seconds a rank waits in the per-step exchange for the others before it aborts the job (env.MPI_TIMEOUT).
DEFAULT_TIMEOUT = 60.0
#: After a step at which rank 0 evaluates, samples or saves, the others wait this many times longer.
SLOW_BOUNDARY_FACTOR = 10
#: A waiting rank polls its pending collective back to back for SPIN_SECONDS (a collective between ranks
#: that have all arrived completes in microseconds), then sleeps between polls (from FIRST_PAUSE, doubling
#: up to MAX_PAUSE seconds: a wait ends at most that late) instead of spinning a core at 100%: about 5% of
#: a core while waiting (bench-mpi measures both).
SPIN_SECONDS = 200e-6
FIRST_PAUSE, MAX_PAUSE = 20e-6, 250e-6
#: Settings that may differ between ranks: run-time only, or only used by rank 0.
LOCAL_SETTINGS = {"threads", "quiet", "data", "run_dir", "results"}
#: Seconds between printing the reason for an abort and aborting: the launcher forwards a rank's output
#: through its proxies, and an abort that overtakes it loses the one line that says what happened.
ABORT_GRACE = 0.5
#: The exchange row of a rank: these control words, then its members' losses (padded to the largest share).
SIGNAL, BUDGET_SPENT, COOLDOWN_TOTAL, SAVE_DUE, SAMPLE_DUE = range(5)
CONTROL_WORDS = 5


class DistributedRefusal(MlmError):
    """A problem every rank knows about at once (different data, too many ranks...): rank 0 reports it and
    every rank exits cleanly with the same code, without an abort."""


def launcher_world_size(environ: dict[str, str] | None = None) -> int:
    """The number of processes an MPI launcher says it started (1 when none did)."""
    environ = os.environ if environ is None else environ
    sizes = [int(environ[name]) for name in LAUNCHER_SIZE_VARIABLES if environ.get(name, "").isdigit()]
    return max(sizes, default=1)


def pair_shares(pairs: int, ranks: int) -> list[tuple[int, int]]:
    """Contiguous pair ranges [p0, p1) of each rank: sizes differ by at most one, larger shares first."""
    base, extra = divmod(pairs, ranks)
    bounds = [r * base + min(r, extra) for r in range(ranks + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def task_costs(engine: Engine) -> list[int]:
    """The relative work of each update task, in integers (every rank must cut the same slices): most of a
    task is regenerating and transposing each voter's noise for its rows and its tensor's columns, so
    2 x (rows + columns), and 3 x for the embedding's rows, which the windows' bytes mask (callgrind on
    `small`, per 64-row task: embedding 1.67 M instructions, other 64 x 64 matrices 1.14 M, a 64-vector
    0.47 M, plus 0.23 M per slice)."""
    tensors = engine.tensors()
    sparse = engine.config.sparse_embedding_votes
    costs = []
    for task in range(engine.update_tasks()):
        first, end = engine.update_task_weights(task, task + 1)
        tensor = next(t for t in tensors if t.offset <= first < t.offset + t.rows * t.cols)
        costs.append(((end - first) // tensor.cols + tensor.cols) * (3 if sparse and tensor.name == "embedding" else 2))
    return costs


def task_shares(engine: Engine, ranks: int) -> list[tuple[int, int]]:
    """Contiguous update task ranges [t0, t1) of each rank, the r-th ending at the task boundary where the
    running :func:`task_costs` is nearest r/N of their total (a range may be empty when there are fewer tasks
    than ranks)."""
    running = [0, *itertools.accumulate(task_costs(engine))]
    cuts = [min(range(len(running)), key=lambda t: (abs(ranks * running[t] - r * running[-1]), t))
            for r in range(1, ranks)]
    bounds = [0, *cuts, len(running) - 1]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def share_moves(comm: Any, engine: Engine, weight_slices: list[tuple[int, int]], moves: np.ndarray,
                wait: Callable[[Any], None]) -> int:
    """All-gather every rank's packed moves of its weight slice (``moves``: this rank's, from
    :meth:`Engine.apply_update_tasks`) and apply the other ranks' to ``engine``'s weights; ``wait`` completes
    the non-blocking collective. Returns how many weights the other ranks' moves changed."""
    rank = comm.Get_rank()
    counts = [packed_moves_size(end - first) for first, end in weight_slices]
    offsets = np.cumsum([0, *counts[:-1]]).tolist()
    table = np.empty(sum(counts), dtype=np.uint8)
    wait(comm.Iallgatherv(moves, [table, counts, offsets, import_mpi().BYTE]))
    return sum(engine.apply_moves(first, end, table[offsets[r] : offsets[r] + counts[r]])
               for r, (first, end) in enumerate(weight_slices) if r != rank)


def import_mpi() -> ModuleType:
    """mpi4py's MPI module, or one line saying how to install it."""
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as error:
        reason = " ".join(str(error).split())
        raise MlmError(f"distributed training needs mpi4py and an MPI library ({reason}): {INSTALL_HINT}") from None
    return MPI


def world_communicator(mode: str) -> Any | None:
    """MPI's world communicator when this run is distributed, else None.

    ``off`` never is; ``mpi`` always is (even with one process); ``auto`` is when a launcher started more
    than one process, detected from its environment without loading MPI otherwise.
    """
    if mode not in MODES:
        raise MlmError(f"--distributed must be one of {', '.join(MODES)} (got {mode!r})")
    if mode == "off" or (mode == "auto" and launcher_world_size() <= 1):
        return None
    comm = import_mpi().COMM_WORLD
    return comm if mode == "mpi" or comm.Get_size() > 1 else None


def poll(request: Any, timeout: float) -> bool:
    """Wait for an MPI request without spinning a core: a few back-to-back tests, then short sleeps
    between tests. MPICH's blocking calls busy-poll at 100% CPU for as long as they wait, which on a
    laptop or a shared node takes a core from the ranks still computing. False after ``timeout`` s."""
    start, pause = time.monotonic(), FIRST_PAUSE
    while not request.Test():
        waited = time.monotonic() - start
        if waited < SPIN_SECONDS:
            continue
        if waited > timeout:
            return False
        time.sleep(pause)
        pause = min(2 * pause, MAX_PAUSE)
    return True


def core_fingerprint() -> str:
    """A hash of what this build of the core computes: two training steps of a small fixed model.

    Ranks on different machines may use different compilers and SIMD kernels and must still compute the
    same bits; this catches a build that does not (or an older mlm core), before any step is wasted.
    """
    from mlm.egg.config import preset

    cfg = preset("tiny").replace(population=8, streams=2, seq_len=8)
    engine = Engine(cfg)
    engine.init_weights(7)
    windows = np.arange(cfg.streams * (cfg.seq_len + 1), dtype=np.uint8).reshape(cfg.streams, -1) * 37
    for step in range(2):
        engine.train_step(7, step, windows)
    return hashlib.sha256(engine.weights.tobytes() + engine.training_state().tobytes()).hexdigest()[:16]


def _comparable_settings(settings: TrainSettings) -> dict[str, str]:
    """The settings every rank must share, flattened (``config.hidden``...) so a difference names one value."""
    out = {}
    for key, value in dataclasses.asdict(settings).items():
        if key in LOCAL_SETTINGS:
            continue
        if isinstance(value, dict):
            out.update({f"{key}.{k}": str(v) for k, v in value.items()})
        else:
            out[key] = str(value)
    return out


def _host() -> str:
    """This machine's name, for messages that say which rank is where."""
    return socket.gethostname()


class DistributedTrainer(Trainer):
    """A :class:`Trainer` that is one rank of an MPI job (see the module docstring)."""

    def __init__(self, settings: TrainSettings, comm: Any):
        super().__init__(settings)
        self.given_settings = _comparable_settings(settings)
        self.comm, self.mpi = comm, import_mpi()
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.root = self.rank == 0
        self.timeout = self._timeout()
        self.slow_boundary = True  # the first exchange waits for every rank's setup
        self.agreed_signal: int | None = None
        self.agreed_budget_spent = False
        self.agreed_cooldown = 0
        self.agreed_save = self.agreed_sample = False
        self.cooldown_adopted = False
        self.cooldown_basis: tuple[int, float] = (0, 0.0)
        self.pending = np.zeros(CONTROL_WORDS, dtype=np.int64)
        self.exchange_seconds: list[float] = []
        self.moves_seconds: list[float] = []
        if not self.root:
            self.display = QuietDisplay()

    @staticmethod
    def _timeout() -> float:
        """The exchange deadline in seconds, from MLM_MPI_TIMEOUT (env.MPI_TIMEOUT) or the default."""
        raw = os.environ.get(env.MPI_TIMEOUT)
        if raw is None:
            return DEFAULT_TIMEOUT
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if value <= 0:
            raise MlmError(f"{env.MPI_TIMEOUT}={raw!r} is not a positive number of seconds")
        return value

    # -- all-or-nothing ---------------------------------------------------------------------

    def abort(self, message: str, code: int = 1) -> NoReturn:
        """Print ``message`` with this rank's name and end every rank of the job now."""
        sys.stdout.flush()
        message = " ".join(message.split())  # one line, whatever the exception's text
        print(f"error: rank {self.rank} of {self.size} ({_host()}): {message}", file=sys.stderr, flush=True)
        time.sleep(ABORT_GRACE)
        self.comm.Abort(code)
        os._exit(code)  # MPI_Abort may return on this rank before the launcher's kill arrives

    def run(self) -> int:
        """Train as one rank; any failure on this rank ends the whole job (see :meth:`abort`)."""
        previous_hook = sys.excepthook
        sys.excepthook = lambda kind, error, tb: self.abort(f"{kind.__name__}: {error}")
        try:
            return super().run()
        except DistributedRefusal:
            if self.root:
                raise
            sys.exit(DistributedRefusal.exit_code)
        except MlmError as error:
            self.abort(str(error), error.exit_code)
        except KeyboardInterrupt:
            self.abort("interrupted before training started", 130)
        except Exception as error:
            self.abort(f"{type(error).__name__}: {error}")
        finally:
            sys.excepthook = previous_hook

    def _wait(self, request: Any, timeout: float, what: str) -> None:
        """Complete a non-blocking collective (see :func:`poll`); abort past the deadline."""
        if not poll(request, timeout):
            self.abort(f"no answer from the other ranks within {timeout:.0f} s in {what}: a rank stalled, "
                       f"was stopped or its machine slept ({env.MPI_TIMEOUT} sets the deadline); "
                       "re-run the same command to resume from the last checkpoint")

    def _deadline(self) -> float:
        """The deadline of the next exchange: longer once after a step at which rank 0 did slow work."""
        slow, self.slow_boundary = self.slow_boundary, False
        return self.timeout * (SLOW_BOUNDARY_FACTOR if slow else 1)

    # -- start: rank 0 decides, every rank checks ---------------------------------------------

    def _lock_run_dir(self) -> contextlib.AbstractContextManager:
        """Rank 0 alone writes the run directory; the others may not even see it."""
        return super()._lock_run_dir() if self.root else contextlib.nullcontext()

    def say(self, message: str) -> None:
        """Only rank 0 shows and logs lines."""
        if self.root:
            super().say(message)

    def _setup(self) -> None:
        """Rank 0 resumes or initialises the run; every other rank checks that it fits and adopts it."""
        outcome: tuple[str | None, dict | None] = (None, None)
        if self.root:
            try:
                super()._setup()
                outcome = (None, self._start_payload())
            except MlmError as error:
                outcome = (str(error), None)
        # The others wait for rank 0's setup (checkpoint, data, baselines) without spinning a core.
        self._wait(self.comm.Ibarrier(), self._slow_timeout, "the start (rank 0 loading the run)")
        error, payload = self.comm.bcast(outcome, root=0)
        if error is not None:
            raise DistributedRefusal(error)
        problem = self._check_against(payload) if not self.root else None
        problems = [p for p in self.comm.allgather(problem) if p]
        if problems:
            more = f" (and {len(problems) - 1} more ranks)" if len(problems) > 1 else ""
            raise DistributedRefusal(problems[0] + more)
        if not self.root:
            self._adopt(payload)
        pairs = self.config.pairs
        if self.size > pairs:
            raise DistributedRefusal(f"{self.size} ranks but only {pairs} pairs per step (--population "
                                     f"{self.config.population}): start at most {pairs} ranks, or raise --population")
        self.shares = pair_shares(pairs, self.size)
        self.share = self.shares[self.rank]
        self.width = CONTROL_WORDS + 2 * max(p1 - p0 for p0, p1 in self.shares)
        if self.settings.mpi_update not in UPDATES:
            raise DistributedRefusal(f"--mpi-update must be one of {', '.join(UPDATES)} "
                                     f"(got {self.settings.mpi_update!r})")
        self.sliced = self.settings.mpi_update == "sliced" and self.size > 1
        self.task_shares = task_shares(self.engine, self.size)
        self.weight_slices = [self.engine.update_task_weights(t0, t1) for t0, t1 in self.task_shares]
        hosts = sorted(set(self.comm.allgather(_host())))
        sizes = sorted({p1 - p0 for p0, p1 in self.shares})
        self.say(f"distributed: {self.size} rank{'s' if self.size > 1 else ''} on {', '.join(hosts)}, "
                 f"{'-'.join(map(str, sizes))} pairs each, {'sliced' if self.sliced else 'replicated'} update")

    def _start_payload(self) -> dict[str, Any]:
        """What the other ranks need of rank 0's start: facts to check, the model, state and bookkeeping."""
        state = self.state
        return {
            "facts": self._facts(self.corpus.sha256), "settings": self.given_settings,
            "config": self.config, "run_seed": self.run_seed, "step": state.step, "best": state.best,
            "last_val": state.last_val, "last_train_loss": state.last_train_loss, "saved_step": state.saved_step,
            "weights": self.engine.weights.copy(), "training_state": self.engine.training_state(),
        }

    @staticmethod
    def _facts(data_sha256: str) -> dict[str, str]:
        """What every rank must share: the mlm version, the bits its core computes, the data."""
        return {"mlm version": __version__, "core fingerprint": core_fingerprint(), "data sha256": data_sha256}

    def _check_against(self, payload: dict[str, Any]) -> str | None:
        """What makes this rank unfit to join rank 0's run, as one line (None: nothing)."""
        where = f"rank {self.rank} ({_host()})"
        try:
            self.corpus, _ = resolve_data(self.settings.data)
        except MlmError as error:
            return f"{where} cannot read the training data: {error}"
        mine, theirs = self._facts(self.corpus.sha256), payload["facts"]
        for key, value in theirs.items():
            if mine[key] != value:
                fix = {"data sha256": f"copy rank 0's data file to {self.corpus.path} on {_host()}",
                       "mlm version": "install the same mlm on every machine",
                       "core fingerprint": f"rebuild mlm on {_host()} (its core, kernel {kernel_name()}, computes "
                                           "different bits)"}[key]
                return f"{where} has a different {key} ({value[:16]} on rank 0, {mine[key][:16]} here): {fix}"
        differ = [f"{k} ({payload['settings'].get(k)} on rank 0, {v} here)" for k, v in self.given_settings.items()
                  if payload["settings"].get(k) != v]
        if differ:
            return f"{where} was started with different settings: {'; '.join(differ)}; start every rank alike"
        return None

    def _adopt(self, payload: dict[str, Any]) -> None:
        """Take rank 0's model, state and bookkeeping (it alone reads the run directory)."""
        self.config, self.run_seed = payload["config"], payload["run_seed"]
        self.engine = Engine(self.config, threads=self.settings.threads)
        self.engine.weights[:] = payload["weights"]
        self.engine.load_training_state(payload["training_state"])
        state = self.state
        state.step, state.best, state.last_val = payload["step"], payload["best"], payload["last_val"]
        state.last_train_loss, state.saved_step = payload["last_train_loss"], payload["saved_step"]
        self.windows = WindowSampler(self.corpus.train, self.config.streams, self.config.seq_len)

    # -- the loop ---------------------------------------------------------------------------

    def _stopping(self, stop: StopRequest) -> bool:
        """Steps run out on every rank at once; a signal (any rank) or the time budget (rank 0's clock)
        is sent in the next exchange, after which every rank stops."""
        if self.settings.steps is not None and self.state.step >= self.settings.steps:
            return True
        if stop.signal is not None:
            self.pending[SIGNAL] = stop.signal
        if self.root and self._budget_spent():
            self.pending[BUDGET_SPENT] = 1
        if self.agreed_signal is not None:
            stop.signal = self.agreed_signal
        return self.agreed_signal is not None or self.agreed_budget_spent

    def _train_step(self, step: int, windows: np.ndarray) -> StepResult:
        """Run this rank's pairs, exchange the losses and control words with every rank, apply the update."""
        if os.environ.get(env.TEST_FAIL_AT) == f"{self.rank}:{step}":
            raise RuntimeError(f"{env.TEST_FAIL_AT} asked rank {self.rank} to fail at step {step}")
        p0, p1 = self.share
        row = np.zeros(self.width, dtype=np.int64)
        row[CONTROL_WORDS : CONTROL_WORDS + 2 * (p1 - p0)] = self.engine.evaluate_pairs(
            self.run_seed, step, windows, p0, p1)
        if self.root:  # checkpoints and samples follow rank 0's clock; every rank saves (a collective) together
            self.pending[SAVE_DUE] = int(self.saves.due(step + 1))
            self.pending[SAMPLE_DUE] = int(self.samples.due(step + 1))
        row[:CONTROL_WORDS] = self.pending
        table = np.empty((self.size, self.width), dtype=np.int64)
        started = time.monotonic()
        self._wait(self.comm.Iallgather(row, table), self._deadline(), f"the exchange of step {step}")
        self.exchange_seconds.append(time.monotonic() - started)
        losses = np.concatenate([table[r, CONTROL_WORDS : CONTROL_WORDS + 2 * (b - a)]
                                 for r, (a, b) in enumerate(self.shares)])
        signals = table[:, SIGNAL][table[:, SIGNAL] > 0]
        if signals.size and self.agreed_signal is None:
            self.agreed_signal = int(signals[0])
            if self.root:
                who = [r for r in range(self.size) if table[r, SIGNAL]]
                self.say(f"stop requested on rank{'s' if len(who) > 1 else ''} {', '.join(map(str, who))}: "
                         f"every rank stops after step {step + 1}")
        self.agreed_budget_spent |= bool(table[0, BUDGET_SPENT])
        self.agreed_cooldown = int(table[0, COOLDOWN_TOTAL])
        self.agreed_save, self.agreed_sample = bool(table[0, SAVE_DUE]), bool(table[0, SAMPLE_DUE])
        if not self.sliced:
            return self.engine.apply_update(self.run_seed, step, windows, losses)
        return self._sliced_update(step, windows, losses)

    def _sliced_update(self, step: int, windows: np.ndarray, losses: np.ndarray) -> StepResult:
        """This rank's slice of the update, then every slice's moves from every rank, applied here."""
        result, moves = self.engine.apply_update_tasks(self.run_seed, step, windows, losses,
                                                       *self.task_shares[self.rank])

        def wait(request: Any) -> None:
            started = time.monotonic()
            self._wait(request, self.timeout, f"the exchange of step {step}'s moves")
            self.moves_seconds.append(time.monotonic() - started)

        moved = result.moved + share_moves(self.comm, self.engine, self.weight_slices, moves, wait)
        self.engine.advance_weight_average(step)
        return dataclasses.replace(result, moved=moved)

    def _fix_cooldown_from_speed(self) -> None:
        """Rank 0 estimates the cooldown from its clock and sends it; every rank adopts it on arrival."""
        if self.cooldown_adopted:
            return
        if self.agreed_cooldown:
            self._adopt_cooldown(self.agreed_cooldown, *self.cooldown_basis)
            self.cooldown_adopted = True
            self.pending[COOLDOWN_TOTAL] = 0
        elif self.root and not self.pending[COOLDOWN_TOTAL]:
            estimate = self._cooldown_estimate()
            if estimate is not None:
                self.pending[COOLDOWN_TOTAL], self.cooldown_basis = estimate[0], estimate[1:]

    def _save_due(self, step: int) -> bool:
        """Whether rank 0 said, in the latest exchange, that a checkpoint is due (its clock decides)."""
        return self.agreed_save

    def _sample_due(self, step: int) -> bool:
        """Whether rank 0 said, in the latest exchange, that a sample is due (its clock decides)."""
        return self.agreed_sample

    def _evaluate(self) -> None:
        """Rank 0 evaluates; the others only note the step."""
        self.slow_boundary = True
        if self.root:
            super()._evaluate()
        else:
            self.state.val_step = self.state.step

    def _sample(self) -> bytes:
        """Rank 0 samples; the others return nothing."""
        self.slow_boundary = True
        return super()._sample() if self.root else b""

    def _save(self, final: bool = False) -> None:
        """Gather every rank's members' state on rank 0, check that all weights agree, then rank 0 saves."""
        self.slow_boundary = True
        self._gather_state()
        if self.sliced:  # every rank's memory is current in its own slice alone: rank 0 gathers the others
            self._gather_vote_memory()
        memory = b"" if self.sliced else self.engine.vote_memory.tobytes()
        digest = hashlib.sha256(self.engine.weights.tobytes() + memory).digest()
        digests = np.empty((self.size, len(digest)), dtype=np.uint8)
        self._wait(self.comm.Iallgather(np.frombuffer(digest, dtype=np.uint8), digests), self._slow_timeout,
                   "the weight check before a checkpoint")
        differ = [r for r in range(self.size) if bytes(digests[r]) != bytes(digests[0])]
        if differ:
            raise DistributedRefusal(f"the weights of rank(s) {', '.join(map(str, differ))} differ from rank 0's at "
                                     f"step {self.state.step}: no checkpoint written; resume from the last one")
        if self.root:
            super()._save(final)
        else:
            self.state.interval_losses = []

    @property
    def _slow_timeout(self) -> float:
        """The deadline around slow work on rank 0 (start, checkpoints)."""
        return self.timeout * SLOW_BOUNDARY_FACTOR

    def _gather_state(self) -> None:
        """Rank 0's population state gets every rank's share (members 2*p0 .. 2*p1-1 of rank r)."""
        per_member = self.engine.state_size_per_member()
        counts = [2 * (p1 - p0) * per_member for p0, p1 in self.shares]
        offsets = [2 * p0 * per_member for p0, _ in self.shares]
        mine = self.engine.state[offsets[self.rank] : offsets[self.rank] + counts[self.rank]]
        byte = self.mpi.SIGNED_CHAR
        if self.root:
            request = self.comm.Igatherv(self.mpi.IN_PLACE, [self.engine.state, counts, offsets, byte], root=0)
        else:
            request = self.comm.Igatherv([mine, byte], None, root=0)
        self._wait(request, self._slow_timeout, "gathering the members' state for a checkpoint")

    def _gather_vote_memory(self) -> None:
        """Rank 0's vote memory gets every rank's slice of it (weights [first, end) of rank r's update)."""
        if not self.engine.vote_memory.size:
            return
        counts = [end - first for first, end in self.weight_slices]
        offsets = [first for first, _ in self.weight_slices]
        memory, short = self.engine.vote_memory, self.mpi.INT16_T
        if self.root:
            request = self.comm.Igatherv(self.mpi.IN_PLACE, [memory, counts, offsets, short], root=0)
        else:
            first, end = self.weight_slices[self.rank]
            request = self.comm.Igatherv([memory[first:end], short], None, root=0)
        self._wait(request, self._slow_timeout, "gathering the vote memory for a checkpoint")

    def _record(self, status: str, seconds: float, steps_done: int) -> None:
        """Rank 0 logs the mean exchange wait and writes the results row."""
        if self.root:
            if self.exchange_seconds:
                mean_us = 1e6 * float(np.mean(self.exchange_seconds))
                self.log.write(f"distributed: mean exchange wait {mean_us:.0f} us over {len(self.exchange_seconds)} "
                               "steps")
            if self.moves_seconds:
                mean_us = 1e6 * float(np.mean(self.moves_seconds))
                self.log.write(f"distributed: sliced update, mean wait for the moves {mean_us:.0f} us over "
                               f"{len(self.moves_seconds)} steps")
            super()._record(status, seconds, steps_done)

