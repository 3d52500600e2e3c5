"""The C core equals the numpy reference (mlm/egg/reference.py) bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from mlm.egg import reference as ref
from mlm.egg.config import MAX_MEMORY_Z_Q8, MAX_THRESHOLD_Z_Q8, ModelConfig
from mlm.egg.engine import Engine

CONFIGS = [
    ModelConfig(hidden=16, layers=1, mlp_ratio=1, seq_len=3, population=2, streams=1, noise_bits=1,
                noise_shift=0, threshold_z_q8=0, alpha_decay_steps=0, sparse_embedding_votes=0),
    ModelConfig(hidden=32, layers=2, mlp_ratio=2, seq_len=5, population=6, streams=2, noise_bits=3,
                noise_shift=4, threshold_z_q8=128, alpha_decay_steps=2, fitness_levels=3, z_growth_steps=2),
    ModelConfig(hidden=48, layers=1, mlp_ratio=3, seq_len=4, population=10, streams=3, noise_bits=4,
                noise_shift=6, threshold_z_q8=300, alpha_decay_steps=0, shift_base=3, fitness_levels=8),
    ModelConfig(hidden=32, layers=1, mlp_ratio=2, seq_len=6, population=12, streams=4, noise_bits=3,
                noise_shift=3, threshold_z_q8=400, alpha_decay_steps=3, fitness_levels=2, vote_memory=1,
                z_growth_steps=1),
    # Growth capped at step 2 and a cooldown over steps 1-2: before, during and after it.
    ModelConfig(hidden=32, layers=1, mlp_ratio=2, seq_len=6, population=12, streams=4, noise_bits=3,
                noise_shift=3, threshold_z_q8=300, fitness_levels=2, vote_memory=1, z_growth_steps=1,
                max_z_q8=450, cooldown_start=1, cooldown_end=3),
    ModelConfig(hidden=16, layers=1, mlp_ratio=1, seq_len=5, population=8, streams=2, noise_bits=2,
                noise_shift=2, threshold_z_q8=64, vote_memory=0, z_growth_steps=0, max_z_q8=4096,
                cooldown_start=2, cooldown_end=4),
    # Weight decay in the vote memory and a lower threshold for the vectors.
    ModelConfig(hidden=32, layers=1, mlp_ratio=2, seq_len=6, population=12, streams=4, noise_bits=3,
                noise_shift=3, threshold_z_q8=300, fitness_levels=2, vote_memory=1, z_growth_steps=1,
                weight_decay_q8=200, vector_z_q8=64),
    # A vector threshold above the rule's largest (capped) without vote memory.
    ModelConfig(hidden=16, layers=2, mlp_ratio=1, seq_len=5, population=8, streams=2, noise_bits=2,
                noise_shift=2, threshold_z_q8=64, vote_memory=0, z_growth_steps=0, vector_z_q8=4096),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"h{c.hidden}l{c.layers}p{c.population}")
def test_init_and_forward_match_reference(cfg: ModelConfig) -> None:
    engine = Engine(cfg)
    engine.init_weights(11)
    weights = ref.init_weights(cfg, 11)
    assert np.array_equal(engine.weights, weights)

    tokens = np.random.default_rng(1).integers(0, 256, 24).astype(np.uint8)
    loss, logits = engine.forward(tokens, want_logits=True)
    expected_logits = np.zeros((23, 256), dtype=np.int8)
    state = np.zeros((cfg.layers, cfg.hidden), dtype=np.int8)
    expected_loss = ref.Model(cfg, weights).sequence_loss(tokens, state, None, expected_logits)
    assert loss == expected_loss
    assert np.array_equal(logits, expected_logits)
    assert loss > 0


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"h{c.hidden}l{c.layers}p{c.population}")
@pytest.mark.parametrize("threads", [1, 2])
def test_training_steps_match_reference(cfg: ModelConfig, threads: int) -> None:
    rng = np.random.default_rng(cfg.hidden + threads)
    engine = Engine(cfg, threads=threads)
    engine.init_weights(5)
    weights = ref.init_weights(cfg, 5)
    state = np.zeros((cfg.population, cfg.layers, cfg.hidden), dtype=np.int8)
    memory = np.zeros(weights.size if cfg.vote_memory else 0, dtype=np.int16)
    total_moved = 0
    for step in range(4):
        windows = rng.integers(0, 256, (cfg.streams, cfg.seq_len + 1)).astype(np.uint8)
        expected = ref.train_step(cfg, weights, state, 77, step, windows, memory)
        got = engine.train_step(77, step, windows)
        weights = expected["weights"]
        assert np.array_equal(got.member_loss_q16, expected["losses"])
        assert np.array_equal(got.fitness, expected["fitness"])
        assert got.moved == expected["moved"]
        assert np.array_equal(engine.weights, weights)
        assert np.array_equal(engine.state, state.reshape(-1))
        assert np.array_equal(engine.vote_memory, memory)
        total_moved += got.moved
    assert total_moved > 0, "the update never moved a weight: the comparison would be vacuous"


@pytest.mark.parametrize("threads", [1, 2])
def test_weight_average_matches_reference(threads: int) -> None:
    """The weight average advances after each update as the reference says, from any starting average
    (rates 2^-1 .. 2^-3 over steps 6-21), and rounds to the same int8 weights."""
    cfg = CONFIGS[0].replace(weight_average=1)
    rng = np.random.default_rng(threads)
    engine = Engine(cfg, threads=threads)
    engine.init_weights(5)
    weights = engine.weights.copy()
    limit = 127 << ref.AVERAGE_FRAC_BITS
    average = rng.integers(-limit, limit + 1, weights.size).astype(np.int32)
    average[:4] = [limit, -limit, (1 << ref.AVERAGE_FRAC_BITS) // 2, -(1 << ref.AVERAGE_FRAC_BITS) // 2]
    engine.weight_average[:] = average
    state = np.zeros((cfg.population, cfg.layers, cfg.hidden), dtype=np.int8)
    memory = np.zeros(weights.size, dtype=np.int16)
    assert engine.averaged_weights().tolist() == ref.averaged_weights(average).tolist()
    assert engine.averaged_weights()[2:4].tolist() == [1, -1], "ties round away from zero"
    shifts = set()
    for step in range(6, 22):
        windows = rng.integers(0, 256, (cfg.streams, cfg.seq_len + 1)).astype(np.uint8)
        weights = ref.train_step(cfg, weights, state, 77, step, windows, memory, average)["weights"]
        engine.train_step(77, step, windows)
        shifts.add(ref.average_shift(cfg, step))
        assert np.array_equal(engine.weights, weights)
        assert np.array_equal(engine.weight_average, average)
        assert np.array_equal(engine.averaged_weights(), ref.averaged_weights(average))
    assert shifts == {1, 2, 3}
    assert not np.array_equal(engine.averaged_weights(), engine.weights), "the average must lag the weights"


def test_weight_average_starts_as_the_weights_and_keeps_a_fraction_of_the_steps() -> None:
    """Rate 1 (a copy) until 2^K steps, then a horizon of 1/2^K .. 1/2^(K-1) of the steps so far."""
    cfg = ModelConfig(weight_average=3)
    assert [ref.average_shift(cfg, t) for t in (0, 6, 7, 14, 15, 1023)] == [0, 0, 0, 0, 1, 7]
    assert ref.average_shift(cfg, 190_000) == 14
    average = np.zeros(3, dtype=np.int32)
    ref.advance_average(cfg, average, np.array([127, -127, 5], dtype=np.int8), 0)
    assert ref.averaged_weights(average).tolist() == [127, -127, 5]


def test_cooldown_schedule_fades_moves_out_linearly() -> None:
    """Over the cooldown the threshold is z * (E - S) / (E - t), so 1/z falls linearly; then the ceiling."""
    cfg = ModelConfig(threshold_z_q8=1024, z_growth_steps=0, cooldown_start=100, cooldown_end=200)
    z = [ref.threshold_z_at(cfg, t) for t in range(0, 260)]
    assert z[:101] == [1024] * 101
    assert z[150] == 2048 and z[175] == 4096 and z[190] == 10240
    assert all(a <= b for a, b in zip(z[:-1], z[1:], strict=True))
    assert z[199] == MAX_MEMORY_Z_Q8 and z[200:] == [MAX_MEMORY_Z_Q8] * 60, "past the growth ceiling, to the rule's"
    assert ref.threshold_z_at(cfg.replace(vote_memory=0), 199) == MAX_THRESHOLD_Z_Q8
    grown = cfg.replace(z_growth_steps=2000, cooldown_start=0, cooldown_end=0)
    assert ref.threshold_z_at(grown, 30000) == 4096, "the legacy 16-spread ceiling still caps z growth"
    assert ref.threshold_z_at(grown.replace(max_z_q8=30000), 30000) == 4096
    assert ref.threshold_z_at(grown.replace(max_z_q8=30000), 126000) == 8192


def test_eval_matches_reference_chunks() -> None:
    """Chunked evaluation = sum of independent zero-state reference forwards over the chunks."""
    cfg = CONFIGS[1]
    engine = Engine(cfg, threads=2)
    engine.init_weights(3)
    tokens = np.random.default_rng(2).integers(0, 256, 50).astype(np.uint8)
    chunk = 8
    model = ref.Model(cfg, engine.weights.copy())
    expected = 0
    for start in range(0, len(tokens) - 1, chunk):
        piece = tokens[start : start + chunk + 1]
        expected += model.sequence_loss(piece, np.zeros((cfg.layers, cfg.hidden), dtype=np.int8))
    assert engine.eval_bits(tokens, chunk) == expected
    engine.threads = 1
    assert engine.eval_bits(tokens, chunk) == expected


@pytest.mark.parametrize("threads", [1, 2])
def test_eval_detail_matches_reference_per_prediction(threads: int) -> None:
    """Per-prediction bits and likeliest bytes = the reference's, chunk by chunk; they sum to eval_bits."""
    cfg = CONFIGS[3]
    engine = Engine(cfg, threads=threads)
    engine.init_weights(5)
    tokens = np.random.default_rng(4).integers(0, 256, 61).astype(np.uint8)
    chunk = 7  # 60 predictions: 8 full chunks and a tail of 4
    model = ref.Model(cfg, engine.weights.copy())
    pieces = [model.predictions(tokens[s : s + chunk + 1], np.zeros((cfg.layers, cfg.hidden), dtype=np.int8))
              for s in range(0, len(tokens) - 1, chunk)]
    losses, argmax = engine.eval_detail(tokens, chunk)
    assert losses.tolist() == np.concatenate([p[0] for p in pieces]).tolist()
    assert argmax.tolist() == np.concatenate([p[1] for p in pieces]).tolist()
    assert int(losses.sum()) == engine.eval_bits(tokens, chunk)
    assert len(set(argmax.tolist())) > 1, "one likeliest byte everywhere: the comparison would be vacuous"


def test_eval_detail_breaks_ties_towards_the_lowest_byte() -> None:
    engine = Engine(CONFIGS[0])  # zero weights: every logit equal
    _, argmax = engine.eval_detail(b"hello world", 4)
    assert argmax.tolist() == [0] * 10


def test_thread_count_and_schedule_do_not_change_results() -> None:
    cfg = ModelConfig(hidden=32, layers=2, mlp_ratio=2, seq_len=16, population=24, streams=4, vote_memory=1,
                      threshold_z_q8=512)
    rng = np.random.default_rng(9)
    windows = [rng.integers(0, 256, (cfg.streams, cfg.seq_len + 1)).astype(np.uint8) for _ in range(4)]
    outcomes = []
    for threads, batched in [(1, True), (2, True), (3, True), (2, False)]:
        engine = Engine(cfg, threads=threads, batched=batched)
        engine.init_weights(4)
        losses = [engine.train_step(8, step, w).member_loss_q16 for step, w in enumerate(windows)]
        outcomes.append((engine.weights.copy(), engine.state.copy(), np.concatenate(losses),
                         engine.vote_memory.copy()))
    for weights, state, losses, memory in outcomes[1:]:
        assert np.array_equal(weights, outcomes[0][0])
        assert np.array_equal(state, outcomes[0][1])
        assert np.array_equal(losses, outcomes[0][2])
        assert np.array_equal(memory, outcomes[0][3])


def test_step_seed_changes_noise_and_run_seed_reproduces() -> None:
    cfg = CONFIGS[1]
    windows = np.random.default_rng(0).integers(0, 256, (cfg.streams, cfg.seq_len + 1)).astype(np.uint8)

    def weights_after(run_seed: int) -> np.ndarray:
        engine = Engine(cfg)
        engine.init_weights(1)
        engine.train_step(run_seed, 0, windows)
        return engine.weights.copy()

    assert np.array_equal(weights_after(1), weights_after(1))
    assert not np.array_equal(weights_after(1), weights_after(2))


def test_log2_matches_float_within_precision() -> None:
    for s in [1, 2, 3, 1000, 65536 * 256, 2**40 + 12345]:
        assert abs(ref.log2_q16(s) / 65536 - np.log2(s)) < 1e-4
