"""The cffi wrapper around the C core: one :class:`Engine` per model.

Weights and the population's recurrent state live in C buffers; the
``weights`` and ``state`` properties are numpy views on them, so checkpoints
read and write them without copies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from mlm.egg import core
from mlm.egg.config import ModelConfig
from mlm.egg.core import ffi, lib
from mlm.egg.layout import VOCAB
from mlm.errors import MlmError

#: The compiled core, as before it had a module of its own (tests/test_native_c.py links against its file).
_core_module = core.module
#: Losses are Q16 fixed-point bits: a loss_q16 divided by this is in bits.
LOSS_SCALE = float(1 << lib.EGG_LOSS_FRAC_BITS)


class CoreError(MlmError):
    """The C core refused an operation (the message comes from egg_last_error)."""


def _check(rc: int) -> None:
    if rc != 0:
        raise CoreError(ffi.string(lib.egg_last_error()).decode())


@dataclass(frozen=True)
class TensorInfo:
    name: str
    rows: int
    cols: int
    offset: int


@dataclass(frozen=True)
class StepResult:
    member_loss_q16: np.ndarray
    fitness: np.ndarray
    moved: int
    tokens_per_member: int

    @property
    def loss_bits(self) -> float:
        """Mean bits per byte over all members and tokens of the step."""
        return float(self.member_loss_q16.mean()) / LOSS_SCALE / self.tokens_per_member


def packed_moves_size(weights: int) -> int:
    """Bytes of the moves of ``weights`` weights, two bits each (egg_apply_update_tasks)."""
    return (weights + 3) // 4


def kernel_name() -> str:
    return ffi.string(lib.egg_kernel_name()).decode()


def available_kernels() -> list[str]:
    return ffi.string(lib.egg_available_kernels()).decode().split(",")


def force_kernel(name: str) -> None:
    """Use kernel ``name`` for every model in this process (MLM_KERNEL does the same at load)."""
    _check(lib.egg_force_kernel(name.encode()))


def parallel_backend() -> str:
    return ffi.string(lib.egg_parallel_backend()).decode()


def max_threads() -> int:
    return int(lib.egg_max_threads())


def _u8(array: np.ndarray):
    return ffi.from_buffer("uint8_t[]", array)


def _i8(array: np.ndarray):
    return ffi.from_buffer("int8_t[]", array)


def _i64(array: np.ndarray):
    return ffi.from_buffer("int64_t[]", array)


def _bytes(data: bytes | np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data,
                                dtype=np.uint8)


def _view(model, pointer, count: int, dtype: type) -> np.ndarray:
    """A numpy array on ``count`` values of ``dtype`` at ``pointer``, a buffer inside ``model``. The array keeps
    the model alive: a view taken from an Engine stays valid after the Engine itself is gone."""
    if not count:
        return np.zeros(0, dtype=dtype)
    # ffi.gc's destructor closes over the model: the pointer, hence every array on it, holds a reference.
    owned = ffi.gc(pointer, lambda _pointer, _model=model: None)
    return np.frombuffer(ffi.buffer(owned, count * np.dtype(dtype).itemsize), dtype=dtype)


class Engine:
    """A model in the C core: weights, population state and the operations on them."""

    def __init__(self, config: ModelConfig, threads: int = 1, batched: bool = True):
        config.validate()
        self.config = config
        # config.py checked at import that ModelConfig has exactly egg_config's fields: none is left zero.
        c = ffi.new("egg_config *", config.to_dict())
        ptr = lib.egg_create(c)
        if ptr == ffi.NULL:
            _check(-1)
        self._model = ffi.gc(ptr, lib.egg_free)
        self.threads = threads
        lib.egg_set_batched(self._model, int(batched))
        model = self._model
        self.weights = _view(model, lib.egg_weights(model), lib.egg_weights_size(model), np.int8)
        self.state = _view(model, lib.egg_state(model), lib.egg_state_size(model), np.int8)
        self.vote_memory = _view(model, lib.egg_vote_memory(model), lib.egg_vote_memory_size(model), np.int16)
        self.weight_average = _view(model, lib.egg_weight_average(model), lib.egg_weight_average_size(model),
                                    np.int32)

    @property
    def threads(self) -> int:
        return int(lib.egg_threads(self._model))

    @threads.setter
    def threads(self, value: int) -> None:
        if value < 1:
            raise MlmError(f"--threads must be at least 1 (got {value})")
        lib.egg_set_threads(self._model, value)

    def tensors(self) -> list[TensorInfo]:
        name, rows, cols, offset = ffi.new("char **"), ffi.new("int32_t *"), ffi.new("int32_t *"), \
            ffi.new("int64_t *")
        out = []
        for i in range(lib.egg_num_tensors(self._model)):
            _check(lib.egg_tensor_info(self._model, i, name, rows, cols, offset))
            out.append(TensorInfo(ffi.string(name[0]).decode(), rows[0], cols[0], offset[0]))
        return out

    def init_weights(self, seed: int) -> None:
        """Deterministic initial weights; also zeroes the population state."""
        lib.egg_init_weights(self._model, seed & (2**64 - 1))

    def training_state(self) -> np.ndarray:
        """Everything besides the weights that a run carries from step to step, as int8 bytes for a
        checkpoint: the population's recurrent state, then the vote memory as little-endian int16 and the
        weight average as little-endian int32 (each when enabled)."""
        memory = self.vote_memory.astype("<i2").view(np.int8)
        average = self.weight_average.astype("<i4").view(np.int8)
        return np.concatenate([self.state, memory, average])

    def load_training_state(self, saved: np.ndarray) -> None:
        """Restore what :meth:`training_state` returned."""
        memory_end = self.state.size + 2 * self.vote_memory.size
        self.state[:] = saved[: self.state.size]
        self.vote_memory[:] = saved[self.state.size : memory_end].view("<i2")
        self.weight_average[:] = saved[memory_end:].view("<i4")

    def advance_weight_average(self, step: int) -> None:
        """Advance the weight average after step ``step``'s weights are final: needed only after
        :meth:`apply_update_tasks` and :meth:`apply_moves` (the whole-step updates do it themselves)."""
        lib.egg_advance_weight_average(self._model, step)

    def averaged_weights(self) -> np.ndarray:
        """The weights evaluation, sampling and export use: the weight average rounded to int8 when the
        configuration keeps one (``weight_average``), else a copy of the weights."""
        out = np.empty_like(self.weights)
        lib.egg_averaged_weights(self._model, _i8(out))
        return out

    @contextmanager
    def averaged(self) -> Iterator[Engine]:
        """This engine with :meth:`averaged_weights` in place of its weights until the block ends."""
        training_weights = self.weights.copy()
        self.weights[:] = self.averaged_weights()
        try:
            yield self
        finally:
            self.weights[:] = training_weights

    def state_size_per_member(self) -> int:
        return self.config.layers * self.config.hidden

    def forward(self, tokens: bytes | np.ndarray, state: np.ndarray | None = None,
                want_logits: bool = False) -> tuple[int, np.ndarray | None]:
        """Noise-free forward; returns (sum of Q16 bits of tokens[1:], logits or None)."""
        toks = _bytes(tokens)
        if state is None:
            state = np.zeros(self.state_size_per_member(), dtype=np.int8)
        logits = np.zeros((max(len(toks) - 1, 0), VOCAB), dtype=np.int8) if want_logits else None
        loss = ffi.new("int64_t *")
        _check(lib.egg_forward(self._model, _u8(toks), len(toks), _i8(state),
                               _i8(logits) if logits is not None else ffi.NULL, loss))
        return int(loss[0]), logits

    def next_logits(self, token: int, state: np.ndarray) -> np.ndarray:
        """Advance a sampling state by one byte; returns the 256 int8 logits."""
        logits = np.zeros(VOCAB, dtype=np.int8)
        _check(lib.egg_next_logits(self._model, token, _i8(state), _i8(logits)))
        return logits

    def eval_bits(self, tokens: bytes | np.ndarray, chunk_len: int) -> int:
        """Sum of Q16 bits over tokens[1:], in independent zero-state chunks of chunk_len predictions."""
        toks = _bytes(tokens)
        loss = ffi.new("int64_t *")
        _check(lib.egg_eval(self._model, _u8(toks), len(toks), chunk_len, loss))
        return int(loss[0])

    def eval_detail(self, tokens: bytes | np.ndarray, chunk_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Per prediction of tokens[1:] (chunked as :meth:`eval_bits`): its Q16 bits (int32) and the
        likeliest byte (uint8, the lowest on ties)."""
        toks = _bytes(tokens)
        if toks.size < 2:
            raise MlmError(f"evaluation needs at least 2 bytes (got {toks.size})")
        losses = np.empty(toks.size - 1, dtype=np.int32)
        argmax = np.empty(toks.size - 1, dtype=np.uint8)
        _check(lib.egg_eval_detail(self._model, _u8(toks), len(toks), chunk_len, ffi.NULL,
                                   ffi.from_buffer("int32_t[]", losses), _u8(argmax)))
        return losses, argmax

    def train_step(self, run_seed: int, step: int, windows: np.ndarray) -> StepResult:
        """One EGGROLL step on ``windows`` (streams x (seq_len + 1) uint8)."""
        cfg = self.config
        win = self._windows(windows)
        losses = np.zeros(cfg.population, dtype=np.int64)
        fitness = np.zeros(cfg.pairs, dtype=np.int8)
        moved = ffi.new("int64_t *")
        _check(lib.egg_train_step(self._model, run_seed & (2**64 - 1), step, _u8(win),
                                  _i64(losses), _i8(fitness), moved))
        return StepResult(losses, fitness, int(moved[0]), cfg.seq_len)

    def _windows(self, windows: np.ndarray) -> np.ndarray:
        cfg = self.config
        win = np.ascontiguousarray(windows, dtype=np.uint8)
        if win.shape != (cfg.streams, cfg.seq_len + 1):
            raise ValueError(f"windows must be {(cfg.streams, cfg.seq_len + 1)}, got {win.shape}")
        return win

    def evaluate_pairs(self, run_seed: int, step: int, windows: np.ndarray, p0: int, p1: int) -> np.ndarray:
        """The first half of :meth:`train_step` for pairs [p0, p1): advances their members' state only and
        returns their 2 * (p1 - p0) Q16 losses (int64)."""
        losses = np.zeros(2 * (p1 - p0), dtype=np.int64)
        _check(lib.egg_evaluate_pairs(self._model, run_seed & (2**64 - 1), step, _u8(self._windows(windows)),
                                      p0, p1, _i64(losses)))
        return losses

    def apply_update(self, run_seed: int, step: int, windows: np.ndarray, member_loss_q16: np.ndarray) -> StepResult:
        """The second half of :meth:`train_step`: the update from every member's loss (population int64)."""
        cfg = self.config
        losses = np.ascontiguousarray(member_loss_q16, dtype=np.int64)
        if losses.shape != (cfg.population,):
            raise ValueError(f"member losses must be ({cfg.population},), got {losses.shape}")
        fitness = np.zeros(cfg.pairs, dtype=np.int8)
        moved = ffi.new("int64_t *")
        _check(lib.egg_apply_update(self._model, run_seed & (2**64 - 1), step, _u8(self._windows(windows)),
                                    _i64(losses), _i8(fitness), moved))
        return StepResult(losses, fitness, int(moved[0]), cfg.seq_len)

    def update_tasks(self) -> int:
        """How many tasks the update has (row blocks of every tensor, in weight order)."""
        return int(lib.egg_update_tasks(self._model))

    def update_task_weights(self, t0: int, t1: int) -> tuple[int, int]:
        """The contiguous weights [first, end) that update tasks [t0, t1) change."""
        first, end = ffi.new("int64_t *"), ffi.new("int64_t *")
        _check(lib.egg_update_task_weights(self._model, t0, t1, first, end))
        return int(first[0]), int(end[0])

    def apply_update_tasks(self, run_seed: int, step: int, windows: np.ndarray, member_loss_q16: np.ndarray,
                           t0: int, t1: int) -> tuple[StepResult, np.ndarray]:
        """:meth:`apply_update` for update tasks [t0, t1) only: it changes only their weights (and vote memory).
        Returns the result (``moved`` counts this slice) and the slice's moves, packed two bits per weight of
        :meth:`update_task_weights` (the format of egg_apply_update_tasks in csrc/egg.h) for :meth:`apply_moves`."""
        cfg = self.config
        losses = np.ascontiguousarray(member_loss_q16, dtype=np.int64)
        if losses.shape != (cfg.population,):
            raise ValueError(f"member losses must be ({cfg.population},), got {losses.shape}")
        first, end = self.update_task_weights(t0, t1)
        moves = np.zeros(packed_moves_size(end - first) + 1, dtype=np.uint8)  # + 1: cffi wants a non-empty buffer
        fitness = np.zeros(cfg.pairs, dtype=np.int8)
        moved = ffi.new("int64_t *")
        _check(lib.egg_apply_update_tasks(self._model, run_seed & (2**64 - 1), step, _u8(self._windows(windows)),
                                          _i64(losses), t0, t1, _u8(moves), _i8(fitness), moved))
        return StepResult(losses, fitness, int(moved[0]), cfg.seq_len), moves[:-1]

    def apply_moves(self, first: int, end: int, moves: np.ndarray) -> int:
        """Apply another process's packed moves (from :meth:`apply_update_tasks`) to weights [first, end);
        returns how many weights they change."""
        if moves.size != packed_moves_size(end - first):
            raise ValueError(f"{end - first} weights take {packed_moves_size(end - first)} bytes of moves, "
                             f"got {moves.size}")
        packed = np.zeros(moves.size + 1, dtype=np.uint8)  # + 1: cffi wants a non-empty buffer
        packed[:-1] = moves
        moved = ffi.new("int64_t *")
        _check(lib.egg_apply_moves(self._model, first, end - first, _u8(packed), moved))
        return int(moved[0])


def inference_engine(config: ModelConfig, weights: np.ndarray, training_state: np.ndarray, threads: int = 1) -> Engine:
    """An engine holding the weights a checkpoint is evaluated, sampled and exported with: its weight
    average when its configuration keeps one, else its weights."""
    engine = Engine(config, threads=threads)
    engine.weights[:] = weights
    if config.weight_average:
        engine.load_training_state(training_state)
        engine.weights[:] = engine.averaged_weights()
    return engine
