"""A training step split into shares of pairs (evaluate) and one update (apply) equals the whole step.

This is what distributed training (mlm/egg/distributed.py) relies on: each process evaluates its share
of the pairs, the member losses are gathered, and every process applies the same update.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlm.egg import reference as ref
from mlm.egg.config import ModelConfig, preset
from mlm.egg.distributed import pair_shares
from mlm.egg.engine import Engine

CONFIGS = [
    ModelConfig(hidden=32, layers=2, mlp_ratio=2, seq_len=5, population=14, streams=3, noise_bits=3,
                noise_shift=4, threshold_z_q8=128, alpha_decay_steps=2, fitness_levels=3, z_growth_steps=2),
    ModelConfig(hidden=32, layers=1, mlp_ratio=2, seq_len=6, population=10, streams=4, noise_bits=3,
                noise_shift=3, threshold_z_q8=300, fitness_levels=8, vote_memory=1, z_growth_steps=1),
]


def test_pair_shares_are_contiguous_and_differ_by_at_most_one() -> None:
    for pairs in (1, 7, 64):
        for ranks in range(1, pairs + 1):
            shares = pair_shares(pairs, ranks)
            assert shares[0][0] == 0 and shares[-1][1] == pairs
            assert all(a[1] == b[0] for a, b in zip(shares[:-1], shares[1:], strict=True))
            sizes = [p1 - p0 for p0, p1 in shares]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"p{c.population}m{c.vote_memory}")
@pytest.mark.parametrize("ranks", [2, 3])
def test_shares_then_update_equal_the_step_and_the_reference(cfg: ModelConfig, ranks: int) -> None:
    rng = np.random.default_rng(ranks)
    whole, split = Engine(cfg, threads=2), Engine(cfg, threads=1)
    whole.init_weights(5)
    split.init_weights(5)
    weights = ref.init_weights(cfg, 5)
    state = np.zeros((cfg.population, cfg.layers, cfg.hidden), dtype=np.int8)
    memory = np.zeros(weights.size if cfg.vote_memory else 0, dtype=np.int16)
    moved = 0
    for step in range(4):
        windows = rng.integers(0, 256, (cfg.streams, cfg.seq_len + 1)).astype(np.uint8)
        expected = whole.train_step(77, step, windows)
        losses = np.concatenate([split.evaluate_pairs(77, step, windows, p0, p1)
                                 for p0, p1 in pair_shares(cfg.pairs, ranks)])
        got = split.apply_update(77, step, windows, losses)
        ref_losses = np.concatenate([ref.evaluate_pairs(cfg, weights, state, 77, step, windows, p0, p1)
                                     for p0, p1 in pair_shares(cfg.pairs, ranks)])
        reference = ref.apply_update(cfg, weights, 77, step, windows, ref_losses, memory)
        weights = reference["weights"]
        assert np.array_equal(losses, expected.member_loss_q16)
        assert np.array_equal(ref_losses, expected.member_loss_q16)
        assert np.array_equal(got.fitness, expected.fitness)
        assert np.array_equal(reference["fitness"], expected.fitness)
        assert got.moved == expected.moved == reference["moved"]
        assert np.array_equal(split.weights, whole.weights)
        assert np.array_equal(split.weights, weights)
        assert np.array_equal(split.state, whole.state)
        assert np.array_equal(split.state, state.reshape(-1))
        assert np.array_equal(split.vote_memory, whole.vote_memory)
        moved += got.moved
    assert moved > 0, "no weight moved: the comparison would be vacuous"


def test_a_share_advances_only_its_own_members_state() -> None:
    cfg = preset("tiny").replace(population=8, streams=2)
    engine = Engine(cfg)
    engine.init_weights(3)
    windows = np.random.default_rng(0).integers(0, 256, (cfg.streams, cfg.seq_len + 1)).astype(np.uint8)
    engine.evaluate_pairs(1, 0, windows, 1, 3)
    per_member = engine.state.reshape(cfg.population, -1)
    assert not per_member[:2].any() and not per_member[6:].any()
    assert per_member[2:6].any()


def test_a_pair_range_outside_the_population_is_refused() -> None:
    cfg = preset("tiny")
    engine = Engine(cfg)
    windows = np.zeros((cfg.streams, cfg.seq_len + 1), dtype=np.uint8)
    with pytest.raises(Exception, match="pair range"):
        engine.evaluate_pairs(1, 0, windows, 0, cfg.pairs + 1)
