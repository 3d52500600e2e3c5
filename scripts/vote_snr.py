#!/usr/bin/env python3
"""Signal-to-noise of one step's votes, per tensor, at a checkpoint's weights.

    python scripts/vote_snr.py runs/small-30min/egg.ckpt.best --data ../shared/data/threejs-r170.txt
    python scripts/vote_snr.py --init small --data ../shared/data/threejs-r170.txt   # at initialisation

Runs --steps training steps from the same weights and state (each with its own noise and data,
as training would see them), with the threshold at its maximum so nothing moves; the vote
memory, zeroed before each step, then holds that step's votes in 1/256 of their null spread.
Per weight, "signal" is the mean vote over the steps (less its sampling error) and "noise" its
spread from step to step. The ratio says how many steps of votes one reliable move needs:
about (2 / snr)^2 for a two-sigma decision.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mlm.data.corpus import load_corpus
from mlm.egg.checkpoint import read_checkpoint
from mlm.egg.config import MAX_THRESHOLD_Z_Q8, preset
from mlm.egg.data import WindowSampler
from mlm.egg.engine import Engine


def step_votes(engine: Engine, weights: np.ndarray, state: np.ndarray, run_seed: int, steps: range,
               sampler: WindowSampler) -> np.ndarray:
    """steps x weights: each step's votes from the same weights and state, in spreads."""
    votes = np.empty((len(steps), weights.size), dtype=np.float32)
    for i, step in enumerate(steps):
        engine.weights[:] = weights
        engine.state[:] = state
        engine.vote_memory[:] = 0
        result = engine.train_step(run_seed, step, sampler.windows(step))
        assert result.moved == 0, "the maximum threshold must keep every weight still"
        votes[i] = engine.vote_memory / 256.0
    return votes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", nargs="?", type=Path, help="checkpoint file")
    parser.add_argument("--init", metavar="PRESET", help="measure at initialisation instead")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if (args.ckpt is None) == (args.init is None):
        parser.error("give a checkpoint or --init PRESET")

    if args.ckpt:
        ckpt = read_checkpoint(args.ckpt)
        config, run_seed, first = ckpt.config, ckpt.run_seed, ckpt.step
        start = Engine(config)
        start.weights[:] = ckpt.weights
        start.load_training_state(ckpt.state)
    else:
        config, run_seed, first = preset(args.init), 1, 0
        start = Engine(config)
        start.init_weights(run_seed)
    weights, state = start.weights.copy(), start.state.copy()
    frozen = config.replace(threshold_z_q8=MAX_THRESHOLD_Z_Q8, z_growth_steps=0, alpha_decay_steps=0, vote_memory=1)
    engine = Engine(frozen, threads=args.threads)
    sampler = WindowSampler(load_corpus(args.data).train, config.streams, config.seq_len)
    votes = step_votes(engine, weights, state, run_seed, range(first, first + args.steps), sampler)

    k = args.steps
    mean, var = votes.mean(axis=0, dtype=np.float64), votes.var(axis=0, ddof=1, dtype=np.float64)
    print(f"step {first}, {k} steps of votes; signal and noise are root-mean-square over each tensor's voted weights")
    print(f"{'tensor':<22}{'weights':>9}{'signal':>9}{'noise':>8}{'snr':>8}{'steps/move':>12}")
    totals = np.zeros(3)
    for t in engine.tensors():
        span = slice(t.offset, t.offset + t.rows * t.cols)
        voted = var[span] > 0
        # Summed before clipping: clipping each weight's estimate at 0 would turn pure noise into signal.
        signal2 = max(float((mean[span][voted] ** 2 - var[span][voted] / k).sum()), 0.0)
        counts = np.array([voted.sum(), signal2, var[span][voted].sum()])
        totals += counts
        print(report_row(t.name, *counts))
    print(report_row("all", *totals))


def report_row(name: str, weights: float, signal2: float, noise2: float) -> str:
    """One line of the table from a tensor's voted-weight count and summed squared signal and noise."""
    snr = np.sqrt(signal2 / noise2) if noise2 else 0.0
    per_weight = max(weights, 1)
    return (f"{name:<22}{int(weights):>9}{np.sqrt(signal2 / per_weight):>9.3f}{np.sqrt(noise2 / per_weight):>8.3f}"
            f"{snr:>8.3f}{(2 / snr) ** 2 if snr else np.inf:>12.0f}")


if __name__ == "__main__":
    main()
