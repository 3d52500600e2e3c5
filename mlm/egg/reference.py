"""Executable specification of the C core, in plain numpy.

Slow and simple on purpose: every integer operation of the model, the loss,
the noise and the update is written out here once, and the C core must equal
it bit for bit (``tests/test_core_reference.py``). When the two disagree, this
file is the definition.

Conventions (shared with ``csrc/``):

* ``sat8`` clamps to [-127, 127]; -128 never occurs, which keeps the SIMD
  sign tricks exact.
* ``>>`` is an arithmetic (flooring) right shift on signed integers.
* Logits are base-2 log-probabilities in 1/16 units; the per-byte loss is a
  Q16 fixed-point number of bits, so sums of losses are exact integers.
"""

from __future__ import annotations

import math

import numpy as np

from mlm.egg.config import MAX_MEMORY_Z_Q8, MAX_THRESHOLD_Z_Q8, ModelConfig
from mlm.egg.core import lib
from mlm.egg.layout import VOCAB, n_weights, tensor_layout

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
LOSS_FRAC_BITS = lib.EGG_LOSS_FRAC_BITS
#: round(65536 * 2**(k/16)) for k = 0..15: the fractional part of the exp2 table.
EXP2_FRAC_Q16 = (
    65536, 68438, 71468, 74632, 77936, 81386, 84990, 88752,
    92682, 96785, 101070, 105545, 110218, 115098, 120194, 125515,
)
#: Pair index used to key the per-tensor keep/skip mask of the update.
ALPHA_STREAM = 0xFFFFFFFF
#: Pair index used to key weight initialisation.
INIT_STREAM = 0xFFFFFFFE
#: Initial uniform range [-R, R] of each kind of tensor (vectors are constant).
INIT_RANGE_MATRIX = 22
INIT_RANGE_EMBEDDING = 48
#: The head starts small so initial logits are near uniform (about 8 bits per byte).
INIT_RANGE_HEAD = 4
NORM_WEIGHT_INIT = 16
LN_RECIP_BITS = 20
LN_OUT_SHIFT = 19


# ----------------------------------------------------------------------------- hashing


def mix64(z: int) -> int:
    """SplitMix64 finaliser on a Python int (the scalar twin of :func:`mix64_array`)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def mix64_array(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    z = z.astype(np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def step_seed(run_seed: int, step: int) -> int:
    """The seed of one training step: a function of the run seed and the step only."""
    return mix64(run_seed + GOLDEN * (step + 1))


def stream_key(seed: int, tensor: int, stream: int) -> int:
    """Key of the counter-based stream for (seed, tensor, pair or special stream)."""
    return mix64(seed ^ mix64(((tensor + 1) << 32) + stream))


def stream_words(key: int, count: int) -> np.ndarray:
    """Words 0..count-1 of a counter-based stream: mix64(key + GOLDEN*(i+1))."""
    i = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return mix64_array(np.uint64(key) + np.uint64(GOLDEN) * i)


def stream_bytes(key: int, count: int) -> np.ndarray:
    """Bytes 0..count-1 of a stream: byte i is byte (i % 8) of word i // 8, little-endian."""
    words = stream_words(key, (count + 7) // 8)
    return words.astype("<u8").view(np.uint8)[:count]


def noise_values(key: int, count: int, noise_bits: int) -> np.ndarray:
    """Symmetric noise u1 - u2 from the low and high nibble of each stream byte."""
    b = stream_bytes(key, count).astype(np.int32)
    mask = (1 << noise_bits) - 1
    return ((b & mask) - ((b >> 4) & mask)).astype(np.int32)


# ----------------------------------------------------------------------------- initialisation


def init_weights(cfg: ModelConfig, seed: int) -> np.ndarray:
    """Deterministic initial weights from a seed."""
    out = np.zeros(n_weights(cfg), dtype=np.int8)
    for t, ten in enumerate(tensor_layout(cfg)):
        if ten.kind == "norm":
            values = np.full(ten.size, NORM_WEIGHT_INIT, dtype=np.int32)
        elif ten.kind == "bias":
            values = np.zeros(ten.size, dtype=np.int32)
        else:
            r = {"embedding": INIT_RANGE_EMBEDDING, "head": INIT_RANGE_HEAD}.get(ten.kind, INIT_RANGE_MATRIX)
            b = stream_bytes(stream_key(seed, t, INIT_STREAM), ten.size).astype(np.int32)
            values = b % (2 * r + 1) - r
        out[ten.offset : ten.offset + ten.size] = values
    return out


# ----------------------------------------------------------------------------- arithmetic


def sat8(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -127, 127)


def matmul_shift(cfg: ModelConfig, cols: int) -> int:
    """Right shift after a matmul over ``cols`` inputs: keeps the output scale of the input."""
    return cfg.shift_base + (cols.bit_length() - 1) // 2


def layer_norm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """L1 layer norm: scale so that mean |out| is about 32 when w = 16."""
    avg = max(1, int(np.abs(x.astype(np.int64)).sum()) // x.shape[-1])
    inv = (1 << LN_RECIP_BITS) // avg
    return sat8((x.astype(np.int64) * w.astype(np.int64) * inv) >> LN_OUT_SHIFT)


def exp2_table() -> np.ndarray:
    """EXP2[i] = 2**(i/16) in Q16 for i = logit + 128 in [0, 255]."""
    i = np.arange(256)
    return (np.array(EXP2_FRAC_Q16, dtype=np.uint64)[i & 15] << (i >> 4).astype(np.uint64))


def log2_q16(s: int) -> int:
    """floor-ish log2 of a positive integer in Q16: integer part from the MSB,
    16 fractional bits by repeated squaring of the Q30 mantissa."""
    msb = s.bit_length() - 1
    y = s >> (msb - 30) if msb >= 30 else s << (30 - msb)
    result = msb << LOSS_FRAC_BITS
    for bit in range(LOSS_FRAC_BITS - 1, -1, -1):
        y = (y * y) >> 30
        if y >= 1 << 31:
            y >>= 1
            result |= 1 << bit
    return result


def token_loss_q16(logits: np.ndarray, target: int, table: np.ndarray) -> int:
    """Bits needed for ``target`` under the int8 logits, in Q16."""
    total = int(table[logits.astype(np.int64) + 128].sum())
    return log2_q16(total) - (16 << LOSS_FRAC_BITS) - ((int(logits[target]) + 128) << 12)


# ----------------------------------------------------------------------------- model


class Perturbation:
    """The rank-1 noise of one pair for every tensor, and the member's sign."""

    def __init__(self, cfg: ModelConfig, seed: int, pair: int, sign: int):
        self.sign = sign
        self.noise_shift = cfg.noise_shift
        self.a: list[np.ndarray] = []
        self.b: list[np.ndarray] = []
        for t, ten in enumerate(tensor_layout(cfg)):
            v = noise_values(stream_key(seed, t, pair), ten.rows + ten.cols, cfg.noise_bits)
            self.a.append(v[: ten.rows].astype(np.int64))
            self.b.append(v[ten.rows :].astype(np.int64))


class Model:
    """Weights plus the forward pass of one member (sign 0: no noise)."""

    def __init__(self, cfg: ModelConfig, weights: np.ndarray):
        self.cfg = cfg
        self.weights = weights.astype(np.int8).copy()
        self.layout = tensor_layout(cfg)
        self.index = {t.name: i for i, t in enumerate(self.layout)}
        self.table = exp2_table()

    def tensor(self, name: str) -> tuple[int, np.ndarray]:
        i = self.index[name]
        t = self.layout[i]
        return i, self.weights[t.offset : t.offset + t.size].reshape(t.rows, t.cols).astype(np.int64)

    def _elementwise(self, name: str, row: int, noise: Perturbation | None) -> np.ndarray:
        """Row ``row`` of a tensor used element by element (embedding rows, vectors)."""
        i, w = self.tensor(name)
        w = w[row]
        if noise is None or noise.sign == 0:
            return w
        pert = (noise.a[i][row] * noise.b[i]) >> noise.noise_shift
        return sat8(w + noise.sign * pert)

    def _matmul(self, name: str, x: np.ndarray, noise: Perturbation | None) -> np.ndarray:
        """int32 accumulators of W·x, plus the member's rank-1 term, before the shift."""
        i, w = self.tensor(name)
        x = x.astype(np.int64)
        acc = w @ x
        if noise is not None and noise.sign != 0:
            xb = int(x @ noise.b[i])
            acc = acc + noise.sign * ((xb * noise.a[i]) >> noise.noise_shift)
        return acc

    def _linear(self, name: str, x: np.ndarray, noise: Perturbation | None) -> np.ndarray:
        return sat8(self._matmul(name, x, noise) >> matmul_shift(self.cfg, x.shape[0]))

    def step_token(self, token: int, state: np.ndarray, noise: Perturbation | None) -> np.ndarray:
        """Advance ``state`` (layers x hidden, int8, in place) by one byte; return int8 logits."""
        cfg = self.cfg
        resid = self._elementwise("embedding", token, noise)
        for layer in range(cfg.layers):
            p = f"layers.{layer}."
            h = state[layer].astype(np.int64)
            x = layer_norm(resid, self._elementwise(p + "norm1", 0, noise))
            sh = matmul_shift(cfg, cfg.hidden)
            gate = sat8((self._matmul(p + "gru.w_gate", x, noise) >> sh)
                        + (self._matmul(p + "gru.u_gate", h, noise) >> sh)
                        + self._elementwise(p + "gru.b_gate", 0, noise))
            cand = sat8((self._matmul(p + "gru.w_cand", x, noise) >> sh)
                        + (self._matmul(p + "gru.u_cand", h, noise) >> sh)
                        + self._elementwise(p + "gru.b_cand", 0, noise))
            h = h + (((gate + 128) * (cand - h)) >> 8)
            state[layer] = h
            resid = sat8(resid + h)
            x = layer_norm(resid, self._elementwise(p + "norm2", 0, noise))
            up = np.maximum(self._linear(p + "mlp.up", x, noise), 0)
            resid = sat8(resid + self._linear(p + "mlp.down", up, noise))
        x = layer_norm(resid, self._elementwise("norm_final", 0, noise))
        return self._linear("head", x, noise).astype(np.int8)

    def predictions(self, tokens: np.ndarray, state: np.ndarray, noise: Perturbation | None = None,
                    logits_out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per prediction of tokens[1:] from tokens[:-1]: its Q16 loss and the likeliest byte (the
        lowest on ties); updates ``state``."""
        losses = np.zeros(max(len(tokens) - 1, 0), dtype=np.int64)
        argmax = np.zeros(losses.size, dtype=np.uint8)
        for t in range(losses.size):
            logits = self.step_token(int(tokens[t]), state, noise)
            if logits_out is not None:
                logits_out[t] = logits
            losses[t] = token_loss_q16(logits, int(tokens[t + 1]), self.table)
            argmax[t] = int(np.argmax(logits))
        return losses, argmax

    def sequence_loss(self, tokens: np.ndarray, state: np.ndarray, noise: Perturbation | None = None,
                      logits_out: np.ndarray | None = None) -> int:
        """Sum of Q16 losses predicting tokens[1:] from tokens[:-1]; updates ``state``."""
        return int(self.predictions(tokens, state, noise, logits_out)[0].sum())


# ----------------------------------------------------------------------------- training step


def threshold_z_at(cfg: ModelConfig, step: int) -> int:
    """The threshold of step ``step`` in 1/256 units.

    z grows as floor(z * sqrt((t + G) / G)) over G = z_growth_steps (constant when G = 0), up to
    max_z_q8; over the cooldown [S, E) that is further multiplied by (E - S) / (E - t), floored, so
    the rate of moves (about 1/z) falls linearly, up to the rule's largest threshold, which holds
    from E on: MAX_MEMORY_Z_Q8 with vote memory, MAX_THRESHOLD_Z_Q8 without.
    """
    z, g, start, end = cfg.threshold_z_q8, cfg.z_growth_steps, cfg.cooldown_start, cfg.cooldown_end
    grown = min(cfg.max_z_q8, math.isqrt(z * z * (step + g) // g)) if g else z
    if end == 0 or step < start:
        return grown
    ceiling = largest_z(cfg)
    return ceiling if step >= end else min(ceiling, grown * (end - start) // (end - step))


def largest_z(cfg: ModelConfig) -> int:
    """The rule's largest threshold: MAX_MEMORY_Z_Q8 with vote memory, MAX_THRESHOLD_Z_Q8 without."""
    return MAX_MEMORY_Z_Q8 if cfg.vote_memory else MAX_THRESHOLD_Z_Q8


def alpha_q16(cfg: ModelConfig, step: int) -> int:
    """Updated fraction alpha_t = D / (t + D) in Q16 (1.0 when the decay is off)."""
    d = cfg.alpha_decay_steps
    return 1 << 16 if d == 0 else ((1 << 16) * d) // (step + d)


def vote_threshold(cfg: ModelConfig, fitness_energy: int, z_q8: int) -> int:
    """floor(z * sigma^2 * sqrt(sum of f^2 over the voters)): the vote's null spread times z.

    sigma^2 of u1 - u2 with u uniform on [0, 2^k) is (4^k - 1) / 6, so
    tau^2 = (z_q8/256)^2 * ((4^k - 1)/6)^2 * energy, computed exactly in integers.
    """
    k = cfg.noise_bits
    num = z_q8 ** 2 * ((1 << (2 * k)) - 1) ** 2 * fitness_energy
    return math.isqrt(num // (36 * 65536))


def fitness(cfg: ModelConfig, losses: np.ndarray) -> np.ndarray:
    """f_p = sign(loss of the minus member - loss of the plus member) * level.

    The level, 1..fitness_levels, grows with the rank of |difference| among
    the pairs that differ: 1 + levels * (number of strictly smaller ones) // their count.
    """
    diff = losses[1::2] - losses[0::2]
    sizes = np.abs(diff)
    differing = np.sort(sizes[diff != 0])
    below = np.searchsorted(differing, sizes, side="left")
    level = 1 + cfg.fitness_levels * below // max(differing.size, 1)
    return (np.sign(diff) * level).astype(np.int64)


def window_bytes(cfg: ModelConfig, windows: np.ndarray) -> np.ndarray:
    """present[s, b]: byte b is one of the inputs (not the last target) of stream s's window."""
    present = np.zeros((cfg.streams, VOCAB), dtype=bool)
    for s in range(cfg.streams):
        present[s, windows[s, : cfg.seq_len]] = True
    return present


def update(cfg: ModelConfig, weights: np.ndarray, seed: int, step: int, fit: np.ndarray, windows: np.ndarray,
           memory: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Apply the votes to every tensor; return the new weights and how many moved.

    Without ``vote_memory``, a weight moves by one where |vote| passes z times
    the vote's null spread. With it, ``memory`` (int16, one per weight, updated
    in place) adds up each step's vote in 1/256 of its spread; a weight moves
    where its memory passes z, spending z of it, and memories stay in [-z, z].
    With ``sparse_embedding_votes``, an embedding row is voted on only by the
    pairs whose window contains its byte (the others' losses do not depend on
    it), and its spread is that of those voters.
    """
    new = weights.astype(np.int64).copy()
    voters = [p for p in range(cfg.pairs) if fit[p] != 0]
    present = window_bytes(cfg, windows)[[stream_of_pair(cfg, p) for p in voters]]  # voters x 256
    energies = np.array([fit[p] ** 2 for p in voters], dtype=np.int64)
    alpha = alpha_q16(cfg, step)
    step_z = threshold_z_at(cfg, step)
    moved = 0
    for t, ten in enumerate(tensor_layout(cfg)):
        vector = ten.kind in ("norm", "bias")
        z = min(largest_z(cfg), step_z * cfg.vector_z_q8 // 256) if vector else step_z
        decay = 0 if vector else cfg.weight_decay_q8
        embedding = ten.kind == "embedding" and cfg.sparse_embedding_votes
        vote = np.zeros((ten.rows, ten.cols), dtype=np.int64)
        for k, p in enumerate(voters):
            v = noise_values(stream_key(seed, t, p), ten.rows + ten.cols, cfg.noise_bits).astype(np.int64)
            a = v[: ten.rows] * present[k] if embedding else v[: ten.rows]
            vote += fit[p] * np.outer(a, v[ten.rows :])
        row_energy = (present * energies[:, None]).sum(axis=0) if embedding else np.full(ten.rows, energies.sum())
        voted = np.repeat(row_energy > 0, ten.cols)
        keep = (stream_words(stream_key(seed, t, ALPHA_STREAM), ten.size) & np.uint64(0xFFFF)) < alpha
        w = new[ten.offset : ten.offset + ten.size]
        vote = vote.reshape(-1)
        if cfg.vote_memory:
            spread = np.repeat([max(vote_threshold(cfg, int(e), 256), 1) for e in row_energy], ten.cols)
            mem = memory[ten.offset : ten.offset + ten.size].astype(np.int64)
            mem += np.sign(vote) * ((np.abs(vote) << 8) // spread)
            # Decay, truncated towards 0 as C's division; rows nobody voted on are left alone.
            mem -= np.where(voted, np.sign(w) * (np.abs(w) * decay // 256), 0)
            direction = np.sign(mem)
        else:
            tau = np.repeat([vote_threshold(cfg, int(e), z) for e in row_energy], ten.cols)
            direction = np.sign(vote)
        want = voted & keep & (np.abs(mem if cfg.vote_memory else vote) > (z if cfg.vote_memory else tau))
        move = want & (np.abs(w + direction) <= 127)
        w[move] += direction[move]
        moved += int(np.count_nonzero(move))
        if cfg.vote_memory:
            mem[move] -= direction[move] * z
            memory[ten.offset : ten.offset + ten.size] = np.clip(mem, -z, z)
    return new.astype(np.int8), moved


def stream_of_pair(cfg: ModelConfig, pair: int) -> int:
    return pair % cfg.streams


def evaluate_pairs(cfg: ModelConfig, weights: np.ndarray, state: np.ndarray, run_seed: int, step: int,
                   windows: np.ndarray, p0: int, p1: int) -> np.ndarray:
    """The members of pairs [p0, p1) run their windows: their states advance in place (``state`` as in
    :func:`train_step`), and their 2 * (p1 - p0) Q16 losses are returned."""
    seed = step_seed(run_seed, step)
    model = Model(cfg, weights)
    losses = np.zeros(2 * (p1 - p0), dtype=np.int64)
    for member in range(2 * p0, 2 * p1):
        pair, sign = member // 2, (1 if member % 2 == 0 else -1)
        noise = Perturbation(cfg, seed, pair, sign)
        losses[member - 2 * p0] = model.sequence_loss(windows[stream_of_pair(cfg, pair)], state[member], noise)
    return losses


def apply_update(cfg: ModelConfig, weights: np.ndarray, run_seed: int, step: int, windows: np.ndarray,
                 losses: np.ndarray, memory: np.ndarray | None = None, average: np.ndarray | None = None) -> dict:
    """The update of a step from every member's loss: the fitness (which ranks each pair against all
    pairs) and the votes, then the weight average (:func:`advance_average`, ``average`` in place when given).
    Returns the new weights, the fitness vector and the number of weights moved."""
    fit = fitness(cfg, losses)
    new_weights, moved = update(cfg, weights, step_seed(run_seed, step), step, fit, windows, memory)
    if cfg.weight_average and average is not None:
        advance_average(cfg, average, new_weights, step)
    return {"weights": new_weights, "losses": losses, "fitness": fit, "moved": moved}


AVERAGE_FRAC_BITS = lib.EGG_AVERAGE_FRAC_BITS


def average_shift(cfg: ModelConfig, step: int) -> int:
    """The weight average's rate after step ``step`` is 2**-shift: its horizon is about 1/2**weight_average
    of the steps so far."""
    return max(0, (step + 1).bit_length() - 1 - cfg.weight_average)


def advance_average(cfg: ModelConfig, average: np.ndarray, weights: np.ndarray, step: int) -> None:
    """average += floor((weights * 2**23 - average) / 2**s + 1/2) in place (int32, 23 fraction bits)."""
    s = average_shift(cfg, step)
    delta = weights.astype(np.int64) * (1 << AVERAGE_FRAC_BITS) - average + ((1 << s) >> 1)
    average += (delta >> s).astype(np.int32)


def averaged_weights(average: np.ndarray) -> np.ndarray:
    """The weight average to the nearest int8, ties away from zero."""
    half = 1 << (AVERAGE_FRAC_BITS - 1)
    a = average.astype(np.int64)
    return (np.sign(a) * ((np.abs(a) + half) >> AVERAGE_FRAC_BITS)).astype(np.int8)


def train_step(cfg: ModelConfig, weights: np.ndarray, state: np.ndarray, run_seed: int, step: int,
               windows: np.ndarray, memory: np.ndarray | None = None, average: np.ndarray | None = None) -> dict:
    """One EGGROLL step: :func:`evaluate_pairs` over all pairs, then :func:`apply_update`.

    ``state`` is (population, layers, hidden) int8 and is advanced in place:
    members keep their own recurrent state across steps. ``windows`` is
    (streams, seq_len + 1) uint8; pair p and both its members read stream
    p % streams. Returns the new weights, per-member Q16 loss sums, the
    fitness vector and the number of weights that moved. ``memory`` is the
    vote memory (see :func:`update`) and ``average`` the weight average (see :func:`advance_average`),
    both advanced in place.
    """
    losses = evaluate_pairs(cfg, weights, state, run_seed, step, windows, 0, cfg.pairs)
    return apply_update(cfg, weights, run_seed, step, windows, losses, memory, average)
