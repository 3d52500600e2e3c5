#!/usr/bin/env python3
"""Compare training settings per step, not per second: the experiment table in docs/results.md.

    python scripts/fixed_steps.py --steps 6000 --eval-every 1000 --set streams=128 --set hidden=32

Trains one model with ``Engine.train_step`` for a fixed number of steps (the same windows, seeds
and arithmetic as ``train``, without checkpoints) and prints val_bpb on the first --val-bytes of
the pinned validation split at every --eval-every steps, then a RESULT line. Step counts do not
depend on machine load, so two of these can run side by side on one thread each; ``sweep``
is the equal-wall-clock comparison.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mlm.data.corpus import load_corpus
from mlm.egg import reference as ref
from mlm.egg.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from mlm.egg.config import ModelConfig, preset
from mlm.egg.data import WindowSampler
from mlm.egg.engine import Engine
from mlm.egg.evaluate import EVAL_CHUNK, bits_per_byte


def parse_settings(pairs: list[str]) -> dict[str, int]:
    """``["hidden=32", "streams=128"]`` -> ``{"hidden": 32, "streams": 128}`` (ModelConfig fields)."""
    known = set(ModelConfig.__dataclass_fields__)
    settings = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in known:
            raise SystemExit(f"--set {pair}: {name!r} is not a ModelConfig field ({', '.join(sorted(known))})")
        settings[name] = int(value)
    return settings


def byte_range(text: str) -> tuple[int, int]:
    """``"2000000:276625"`` -> (2000000, 276625)."""
    start, _, size = text.partition(":")
    try:
        return int(start), int(size)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:BYTES, got {text!r}") from None


def training_slices(train: np.ndarray, hold_out: tuple[int, int] | None,
                    score: list[tuple[int, int]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The training bytes the windows come from (without the --hold-out slice) and the --score slices by name
    ("train[START:+BYTES] held out" or "... seen")."""
    for start, size in score + ([hold_out] if hold_out else []):
        if start < 0 or size < 2 or start + size > train.size:
            raise SystemExit(f"{start}:{size}: the bytes must lie inside the {train.size:,}-byte training split")

    def held_out(start: int, size: int) -> bool:
        return hold_out is not None and hold_out[0] <= start and start + size <= sum(hold_out)

    scored = {f"train[{a}:+{n}] {'held out' if held_out(a, n) else 'seen'}": train[a : a + n] for a, n in score}
    if hold_out:
        train = np.concatenate([train[: hold_out[0]], train[sum(hold_out) :]])
    return train, scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("input.txt"), help="corpus (default: ./input.txt)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=INT", help="override a config field")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--val-bytes", type=int, default=262144)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=Path, metavar="CKPT",
                        help="continue a checkpoint (its configuration, seed, weights and state) instead of a fresh "
                             "model: branch experiments from one point of a run")
    parser.add_argument("--average", type=int, action="append", default=[], metavar="K",
                        help="also evaluate an exponential weight average with weight_average=K, kept beside the "
                             "run in numpy (the reference's rule), so several horizons are compared on one run")
    parser.add_argument("--hold-out", type=byte_range, metavar="START:BYTES",
                        help="train without training bytes [START, START+BYTES) (score them with --score)")
    parser.add_argument("--score", type=byte_range, action="append", default=[], metavar="START:BYTES",
                        help="also report bits/byte of training bytes [START, START+BYTES) at every evaluation (with "
                             "--hold-out of the same bytes: how well the model does on files it never trained on)")
    parser.add_argument("--save", type=Path, metavar="CKPT",
                        help="write the final model as a checkpoint (for eval --breakdown, judge and sample)")
    args = parser.parse_args()

    settings = parse_settings(args.set)
    start = read_checkpoint(args.start) if args.start else None
    config = (start.config if start else preset(args.preset)).overridden(**settings).validate()
    corpus = load_corpus(args.data)
    engine = Engine(config, threads=args.threads)
    if start:
        engine.weights[:] = start.weights
        engine.load_training_state(start.state)
        args.seed = start.run_seed
    else:
        engine.init_weights(args.seed)
    first_step = start.step if start else 0
    train, scored = training_slices(corpus.train, args.hold_out, args.score)
    windows = WindowSampler(train, config.streams, config.seq_len)
    val = corpus.val[: args.val_bytes]
    averages = {k: engine.weights.astype(np.int32) << ref.AVERAGE_FRAC_BITS for k in args.average}
    step_seconds, curve = 0.0, []
    for step in range(first_step, args.steps):
        started = time.perf_counter()
        result = engine.train_step(args.seed, step, windows.windows(step))
        step_seconds += time.perf_counter() - started
        for k, average in averages.items():
            ref.advance_average(config.replace(weight_average=k), average, engine.weights, step)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            curve.append((step + 1, bits_per_byte(engine.eval_bits(val, EVAL_CHUNK), val.size)))
            print(f"step {step + 1} | val_bpb {curve[-1][1]:.4f} | train {result.loss_bits:.3f} | "
                  f"moved {result.moved} | {1000 * step_seconds / (step + 1 - first_step):.1f} ms/step", flush=True)
            if config.weight_average:
                with engine.averaged():
                    print(f"step {step + 1} | average of the run (weight_average={config.weight_average}) | "
                          f"val_bpb {bits_per_byte(engine.eval_bits(val, EVAL_CHUNK), val.size):.4f}", flush=True)
            with engine.averaged():
                for name, text in scored.items():
                    bits = bits_per_byte(engine.eval_bits(text, EVAL_CHUNK), text.size)
                    print(f"step {step + 1} | {name} | bpb {bits:.4f}", flush=True)
            for k, average in averages.items():
                training_weights = engine.weights.copy()
                engine.weights[:] = ref.averaged_weights(average)
                print(f"step {step + 1} | average weight_average={k} | "
                      f"val_bpb {bits_per_byte(engine.eval_bits(val, EVAL_CHUNK), val.size):.4f}", flush=True)
                engine.weights[:] = training_weights
    if args.save:
        write_checkpoint(Checkpoint(
            config=config, step=args.steps, run_seed=args.seed, data_cursor=windows.cursor(args.steps),
            weights=engine.weights.copy(), state=engine.training_state(),
            metrics={"train_loss": result.loss_bits, "val_bpb": curve[-1][1] if curve else None,
                     "best_metric": curve[-1][1] if curve else None},
            best_metric_name="val_bpb", extra={"data_sha256": corpus.sha256}), args.save)
    if curve:
        print("RESULT", json.dumps(settings), f"final {curve[-1][1]:.4f}", f"best {min(v for _, v in curve):.4f}")


if __name__ == "__main__":
    main()
