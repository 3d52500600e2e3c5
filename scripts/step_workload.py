#!/usr/bin/env python3
"""A fixed training workload: the same steps, windows and seeds every run, for profiling and A/B timing.

    python scripts/step_workload.py --preset small --steps 20 --threads 2

Trains a freshly initialised model (seed 1) on random windows (seed 1) for --steps steps and
prints one JSON line: wall seconds per step, population-tokens/s, the core's kernel and a hash of
the final weights, state and vote memory. The hash depends only on the arithmetic, so two
builds of the core (two checkouts on PYTHONPATH) must print the same one. Whichever ``mlm``
is first on PYTHONPATH is the one timed: scripts/ab_speed.py runs this file against two
checkouts in turn. Under callgrind only ``egg_train_step`` needs counting:

    valgrind --tool=callgrind --toggle-collect=egg_train_step \
        python scripts/step_workload.py --preset small --steps 2 --threads 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time

import numpy as np

from mlm.egg.config import preset
from mlm.egg.engine import Engine, kernel_name

SEED = 1
OVERRIDES = ("hidden", "layers", "mlp_ratio", "seq_len", "population", "streams")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (they count in the hash)")
    parser.add_argument("--threads", type=int, default=1)
    for name in OVERRIDES:
        parser.add_argument("--" + name.replace("_", "-"), type=int)
    args = parser.parse_args()
    changes = {name: getattr(args, name) for name in OVERRIDES if getattr(args, name) is not None}
    if "population" in changes and "streams" not in changes:
        changes["streams"] = min(preset(args.preset).streams, changes["population"] // 2)
    cfg = preset(args.preset).replace(**changes)
    engine = Engine(cfg, threads=args.threads)
    engine.init_weights(SEED)
    rng = random.Random(SEED)
    wall = 0.0
    for step in range(args.warmup + args.steps):
        windows = np.frombuffer(rng.randbytes(cfg.streams * (cfg.seq_len + 1)), np.uint8)
        start = time.perf_counter()
        engine.train_step(SEED, step, windows.reshape(cfg.streams, cfg.seq_len + 1))
        if step >= args.warmup:
            wall += time.perf_counter() - start
    digest = hashlib.sha256()
    for buffer in (engine.weights, engine.state, engine.vote_memory):
        digest.update(buffer.tobytes())
    print(json.dumps({
        "kernel": kernel_name(), "threads": args.threads, "steps": args.steps,
        "seconds_per_step": wall / max(args.steps, 1),
        "pop_tok_per_s": cfg.population * cfg.seq_len * args.steps / wall if wall else None,
        "hash": digest.hexdigest()[:16],
    }))


if __name__ == "__main__":
    main()
