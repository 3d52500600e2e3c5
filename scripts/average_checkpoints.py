#!/usr/bin/env python3
"""Does averaging the weights of a run's last checkpoints help? (LAWA, measured offline.)

    python scripts/average_checkpoints.py runs/small-30min

Reads every valid ring slot of RUN_DIR (all of one configuration), evaluates each one on the
whole validation split of the run's corpus, then the element-wise mean of the newest k slots,
rounded to the nearest int8, for k = 2 .. the number of slots. Late ES moves are mostly noise
(docs/results.md), and averaging cancels noise without extra forward passes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mlm.data.corpus import load_corpus
from mlm.egg.engine import Engine
from mlm.egg.evaluate import EVAL_CHUNK, bits_per_byte
from mlm.egg.layout import expected_sizes
from mlm.egg.run_dir import RING_SIZE, RunDir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    run = RunDir(args.run_dir, expected_sizes)
    slots = sorted((run.resolve(str(slot)) for slot in range(RING_SIZE) if run.slot_path(slot).exists()),
                   key=lambda c: c.step)
    if len({c.config for c in slots}) != 1:
        raise SystemExit("the ring holds checkpoints of more than one configuration")
    val = load_corpus(slots[-1].extra["data_path"]).val
    engine = Engine(slots[-1].config, threads=args.threads)

    def score(weights: np.ndarray) -> float:
        engine.weights[:] = weights
        return bits_per_byte(engine.eval_bits(val, EVAL_CHUNK), val.size)

    for ckpt in slots:
        print(f"step {ckpt.step:>8}: val_bpb {score(ckpt.weights):.4f}")
    stacked = np.stack([c.weights.astype(np.float64) for c in slots])
    for k in range(2, len(slots) + 1):
        mean = np.clip(np.rint(stacked[-k:].mean(axis=0)), -127, 127).astype(np.int8)
        print(f"mean of the newest {k:>2} (steps {slots[-k].step}-{slots[-1].step}): val_bpb {score(mean):.4f}")


if __name__ == "__main__":
    main()
