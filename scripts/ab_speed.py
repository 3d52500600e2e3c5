#!/usr/bin/env python3
"""Time two builds of the core side by side: population-tokens/s and non-GEMM time, alternating runs.

    python scripts/ab_speed.py /work/main /work/wt15 --preset small --threads 2 --rounds 5

Each checkout must have its core built (``python mlm/egg/_build.py`` in it). Every round runs
``python -m mlm.egg bench --schedule batched --json`` once per checkout, in alternating
subprocesses with that checkout first on PYTHONPATH, so both see the same machine load in
turn. Reported per checkout: the median and the best over rounds of the step's
population-tokens/s and of its non-GEMM wall nanoseconds per population-token (the step's time
minus the GEMM kernel alone at the step's shapes, each the median or the best of its own runs;
the GEMM's rate comes from ``gemm_gmacs``, so checkouts whose bench predates the non-GEMM keys
compare too). Then the ratios B/A. Before timing, ``scripts/step_workload.py`` trains the same
steps with each build and the two hashes of weights, state and vote memory must agree.

With ``--population P --seq-len T`` (streams P/2) both checkouts are timed at that shape by
``scripts/step_workload.py`` instead, --workload-steps steps a run, so a build whose preset or bench
predates the shape compares too (issue 15's baseline, 3583756, at today's 1,024 x 16); that mode
reports population-tokens/s only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mlm.egg.bench import gemm_macs_per_pop_token  # noqa: E402
from mlm.egg.config import preset  # noqa: E402
from mlm.env import KERNEL  # noqa: E402


def run(checkout: Path, args: list[str]) -> str:
    """stdout of ``python ARGS`` with ``checkout`` first on PYTHONPATH, in a scratch directory."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    env.pop(KERNEL, None)
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([sys.executable, *args], env=env, cwd=tmp, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{checkout}: {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def workload(checkout: Path, name: str, threads: int, steps: int, shape: list[str]) -> dict:
    """scripts/step_workload.py's report (hash, population-tokens/s) of ``steps`` steps at ``shape``."""
    out = run(checkout, [str(HERE / "step_workload.py"), "--preset", name, "--steps", str(steps),
                         "--threads", str(threads), *shape])
    return json.loads(out)


def bench(checkout: Path, name: str, threads: int, seconds: float) -> tuple[float, float, str]:
    """(population-tokens/s, GEMM-alone wall ns per population-token, kernel) of one bench run."""
    report = json.loads(run(checkout, ["-m", "mlm.egg", "bench", "--preset", name, "--schedule", "batched",
                                       "--threads", str(threads), "--seconds", str(seconds), "--json"]))
    gemm_ns = 1e9 * gemm_macs_per_pop_token(preset(name)) / (report["gemm_gmacs"] * 1e9)
    return report["pop_tok_per_s"], gemm_ns, report["kernel"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="checkout A (the baseline)")
    parser.add_argument("b", type=Path, help="checkout B")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0, help="bench budget per run")
    parser.add_argument("--hash-steps", type=int, default=5)
    parser.add_argument("--population", type=int, help="time this many members (with --seq-len) by step_workload.py")
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--workload-steps", type=int, default=100, help="steps per timed run at --population")
    args = parser.parse_args()
    if (args.population is None) != (args.seq_len is None):
        parser.error("--population and --seq-len go together")
    checkouts = {"A": args.a.resolve(), "B": args.b.resolve()}
    shape = [] if args.population is None else ["--population", str(args.population), "--seq-len", str(args.seq_len),
                                                "--streams", str(args.population // 2)]

    hashes = {k: workload(c, args.preset, args.threads, args.hash_steps, shape)["hash"] for k, c in checkouts.items()}
    print(f"weights hash after {args.hash_steps + 1} steps: A {hashes['A']}, B {hashes['B']}")
    if hashes["A"] != hashes["B"]:
        raise SystemExit("the two builds train differently: not comparable")
    if shape:
        compare_workloads(checkouts, args, shape)
        return

    rates: dict[str, list[float]] = {"A": [], "B": []}
    gemm: dict[str, list[float]] = {"A": [], "B": []}
    for r in range(args.rounds):
        for key, checkout in checkouts.items():
            rate, gemm_ns, kernel = bench(checkout, args.preset, args.threads, args.seconds)
            rates[key].append(rate)
            gemm[key].append(gemm_ns)
            print(f"round {r + 1} {key} ({kernel}): {rate:12,.0f} pop-tokens/s, non-GEMM "
                  f"{1e9 / rate - gemm_ns:8.1f} ns/pop-token", flush=True)
    # Other load only ever slows a run down, so on a shared machine the fastest step and the fastest
    # GEMM-alone run (each a best of its own) are the steadier figures beside the medians.
    for label, pick in (("median", statistics.median), ("best", None)):
        got = {}
        for k in checkouts:
            rate = pick(rates[k]) if pick else max(rates[k])
            gemm_ns = pick(gemm[k]) if pick else min(gemm[k])
            got[k] = (rate, 1e9 / rate - gemm_ns)
        for key, checkout in checkouts.items():
            print(f"{key} {checkout}: {label} {got[key][0]:12,.0f} pop-tokens/s, non-GEMM {got[key][1]:8.1f} ns")
        print(f"B/A ({label}): {got['B'][0] / got['A'][0]:.2f}x population-tokens/s, non-GEMM time / "
              f"{got['A'][1] / got['B'][1]:.2f}")


def compare_workloads(checkouts: dict[str, Path], args: argparse.Namespace, shape: list[str]) -> None:
    """Alternating step_workload.py runs at ``shape``: population-tokens/s, median and best, and B/A."""
    rates: dict[str, list[float]] = {"A": [], "B": []}
    for r in range(args.rounds):
        for key, checkout in checkouts.items():
            report = workload(checkout, args.preset, args.threads, args.workload_steps, shape)
            rates[key].append(report["pop_tok_per_s"])
            print(f"round {r + 1} {key} ({report['kernel']}): {rates[key][-1]:12,.0f} pop-tokens/s", flush=True)
    for label, pick in (("median", statistics.median), ("best", max)):
        got = {k: pick(v) for k, v in rates.items()}
        for key, checkout in checkouts.items():
            print(f"{key} {checkout}: {label} {got[key]:12,.0f} pop-tokens/s")
        print(f"B/A ({label}): {got['B'] / got['A']:.2f}x population-tokens/s")


if __name__ == "__main__":
    main()
