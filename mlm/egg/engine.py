"""The cffi wrapper around the C core: one :class:`Engine` per model.

Weights and the population's recurrent state live in C buffers; the
``weights`` and ``state`` properties are numpy views on them, so checkpoints
read and write them without copies.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from mlm.egg.config import ModelConfig
from mlm.errors import MlmError


def _installed_core() -> ModuleType:
    """The compiled core of the installed mlm.

    Running ``python -m mlm.egg`` inside a source checkout imports ``./mlm``,
    which has no compiled core after ``pip install .``; then the installed
    build of the same package is used.
    """
    try:
        from mlm.egg import _core

        return _core
    except ImportError:
        pass
    # Several "mlm" distributions may be visible: the build's own mlm.egg-info in the checkout comes first.
    files = [f for dist in importlib.metadata.distributions(name="mlm") for f in dist.files or []]
    for file in files:
        if (file.parent.as_posix() == "mlm/egg" and file.name.startswith("_core.") and file.suffix in (".so", ".pyd")
                and file.locate().exists()):
            spec = importlib.util.spec_from_file_location("mlm.egg._core", file.locate())
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules["mlm.egg._core"] = module
            return module
    raise MlmError("the C core of mlm is not built: run `pip install .` (or `python mlm/egg/_build.py` "
                   "to build it inside this checkout)")


_core_module = _installed_core()
ffi, lib = _core_module.ffi, _core_module.lib

CONFIG_FIELDS = (
    "hidden", "layers", "mlp_ratio", "seq_len", "population", "streams", "noise_bits", "noise_shift",
    "threshold_z_q8", "alpha_decay_steps", "z_growth_steps", "shift_base", "fitness_levels", "sparse_embedding_votes",
    "vote_memory", "max_z_q8", "cooldown_start", "cooldown_end", "weight_decay_q8", "vector_z_q8",
)
LOSS_SCALE = float(1 << 16)


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


class Engine:
    """A model in the C core: weights, population state and the operations on them."""

    def __init__(self, config: ModelConfig, threads: int = 1, batched: bool = True):
        config.validate()
        self.config = config
        c = ffi.new("egg_config *", {name: getattr(config, name) for name in CONFIG_FIELDS})
        ptr = lib.egg_create(c)
        if ptr == ffi.NULL:
            _check(-1)
        self._model = ffi.gc(ptr, lib.egg_free)
        self.threads = threads
        lib.egg_set_batched(self._model, int(batched))
        self.weights = np.frombuffer(
            ffi.buffer(lib.egg_weights(self._model), lib.egg_weights_size(self._model)), dtype=np.int8)
        self.state = np.frombuffer(
            ffi.buffer(lib.egg_state(self._model), lib.egg_state_size(self._model)), dtype=np.int8)
        memory_size = lib.egg_vote_memory_size(self._model)
        self.vote_memory = np.frombuffer(ffi.buffer(lib.egg_vote_memory(self._model), 2 * memory_size),
                                         dtype=np.int16) if memory_size else np.zeros(0, dtype=np.int16)

    @property
    def threads(self) -> int:
        return int(lib.egg_threads(self._model))

    @threads.setter
    def threads(self, value: int) -> None:
        if value < 1:
            raise MlmError(f"--threads must be at least 1 (got {value})")
        lib.egg_set_threads(self._model, value)

    def set_batched(self, batched: bool) -> None:
        lib.egg_set_batched(self._model, int(batched))

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
        """Everything besides the weights that the next step depends on, as int8 bytes for a checkpoint:
        the population's recurrent state, then the vote memory as little-endian int16 (when enabled)."""
        memory = self.vote_memory.astype("<i2").view(np.int8)
        return np.concatenate([self.state, memory])

    def load_training_state(self, saved: np.ndarray) -> None:
        """Restore what :meth:`training_state` returned."""
        self.state[:] = saved[: self.state.size]
        self.vote_memory[:] = saved[self.state.size :].view("<i2")

    def state_size_per_member(self) -> int:
        return self.config.layers * self.config.hidden

    def forward(self, tokens: bytes | np.ndarray, state: np.ndarray | None = None,
                want_logits: bool = False) -> tuple[int, np.ndarray | None]:
        """Noise-free forward; returns (sum of Q16 bits of tokens[1:], logits or None)."""
        toks = _bytes(tokens)
        if state is None:
            state = np.zeros(self.state_size_per_member(), dtype=np.int8)
        logits = np.zeros((max(len(toks) - 1, 0), 256), dtype=np.int8) if want_logits else None
        loss = ffi.new("int64_t *")
        _check(lib.egg_forward(self._model, _u8(toks), len(toks), _i8(state),
                               _i8(logits) if logits is not None else ffi.NULL, loss))
        return int(loss[0]), logits

    def next_logits(self, token: int, state: np.ndarray) -> np.ndarray:
        """Advance a sampling state by one byte; returns the 256 int8 logits."""
        logits = np.zeros(256, dtype=np.int8)
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
