"""``python -m mlm.egg bench-mpi``: what splitting a training step across MPI ranks costs.

Run it under a launcher, ``mpiexec -n 2 python -m mlm.egg bench-mpi --preset small --threads 1``
(alone it is N = 1). Rank 0 prints:

* the two halves of a one-process step, interleaved in one process: evaluating the pairs (noise and
  forward: divided among the ranks) and the update (fitness, noise regenerated, vote: the same work
  on every rank);
* with N > 1, distributed steps as training runs them (each rank evaluates its share, the member
  losses are all-gathered with the polled wait, every rank applies the update): the step time, the
  time spent in the exchange, and the parallel efficiency T1 / (N * T_N) against one-process steps
  timed in the same job while the other ranks idle;
* the all-gather alone at the exchange's size, polled (as training waits) and blocking;
* the CPU a rank burns while it waits one second in the exchange: polled, and MPICH's blocking wait;
* a model of a step at N ranks, ``T_eval / N + T_update + T_exchange(N)``, from those measurements,
  with the exchange as ``ceil(log2 N)`` latencies plus the gathered bytes over the link.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass

import click
import numpy as np

from mlm.egg.config import PRESETS
from mlm.egg.config import preset as preset_config
from mlm.egg.distributed import CONTROL_WORDS, import_mpi, pair_shares, poll
from mlm.egg.engine import Engine
from mlm.egg.layout import n_weights

MODEL_RANKS = (1, 2, 4, 8, 16, 32, 64)
SEED = 1


@dataclass
class Halves:
    """Median seconds of the two halves of a step."""

    evaluate: float
    update: float

    @property
    def step(self) -> float:
        return self.evaluate + self.update


def exchange_bytes(pairs: int, ranks: int) -> int:
    """Bytes every rank receives per step: one row per rank, control words and the largest share's losses."""
    largest = max(p1 - p0 for p0, p1 in pair_shares(pairs, ranks))
    return ranks * (CONTROL_WORDS + 2 * largest) * 8


def exchange_seconds(pairs: int, ranks: int, latency: float, bytes_per_second: float) -> float:
    """Modelled all-gather time: recursive doubling, ceil(log2 N) rounds of latency, all rows over the link."""
    if ranks == 1:
        return 0.0
    return math.ceil(math.log2(ranks)) * latency + exchange_bytes(pairs, ranks) / bytes_per_second


def efficiency(halves: Halves, ranks: int, exchange: float) -> float:
    """T1 / (N * T_N) with T_N = T_eval / N + T_update + T_exchange."""
    return halves.step / (ranks * (halves.evaluate / ranks + halves.update + exchange))


def _windows(cfg, step: int) -> np.ndarray:
    rng = np.random.default_rng(SEED + step)
    return rng.integers(0, 256, (cfg.streams, cfg.seq_len + 1)).astype(np.uint8)


def one_process_halves(engine: Engine, steps: int) -> Halves:
    cfg = engine.config
    evaluate, update = [], []
    for step in range(steps):
        windows = _windows(cfg, step)
        t0 = time.perf_counter()
        losses = engine.evaluate_pairs(SEED, step, windows, 0, cfg.pairs)
        t1 = time.perf_counter()
        engine.apply_update(SEED, step, windows, losses)
        update.append(time.perf_counter() - t1)
        evaluate.append(t1 - t0)
    return Halves(float(np.median(evaluate)), float(np.median(update)))


def distributed_steps(comm, engine: Engine, steps: int, first: int) -> dict[str, float]:
    """Training's step loop on every rank; rank 0's median step and exchange seconds."""
    cfg, rank, size = engine.config, comm.Get_rank(), comm.Get_size()
    shares = pair_shares(cfg.pairs, size)
    p0, p1 = shares[rank]
    width = CONTROL_WORDS + 2 * max(b - a for a, b in shares)
    row, table = np.zeros(width, dtype=np.int64), np.empty((size, width), dtype=np.int64)
    step_s, wait_s, cpu_s = [], [], []
    for step in range(first, first + steps):
        windows = _windows(cfg, step)
        cpu = time.process_time()
        t0 = time.perf_counter()
        row[CONTROL_WORDS : CONTROL_WORDS + 2 * (p1 - p0)] = engine.evaluate_pairs(SEED, step, windows, p0, p1)
        t1 = time.perf_counter()
        poll(comm.Iallgather(row, table), 600)
        t2 = time.perf_counter()
        losses = np.concatenate([table[r, CONTROL_WORDS : CONTROL_WORDS + 2 * (b - a)]
                                 for r, (a, b) in enumerate(shares)])
        engine.apply_update(SEED, step, windows, losses)
        step_s.append(time.perf_counter() - t0)
        wait_s.append(t2 - t1)
        cpu_s.append(time.process_time() - cpu)
    # CPU seconds leave out the time a rank is descheduled on a loaded machine: the slowest rank's median.
    return {"step": float(np.median(step_s)), "exchange_wait": float(np.median(wait_s)),
            "cpu": max(comm.allgather(float(np.median(cpu_s))))}


def collective_seconds(comm, width: int, repeats: int) -> dict[str, float]:
    """Median seconds of the exchange's all-gather alone, polled and blocking, after a barrier."""
    size = comm.Get_size()
    row, table = np.zeros(width, dtype=np.int64), np.empty((size, width), dtype=np.int64)
    out = {}
    for name in ("polled", "blocking"):
        comm.Barrier()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            if name == "polled":
                poll(comm.Iallgather(row, table), 600)
            else:
                comm.Allgather(row, table)
            times.append(time.perf_counter() - t0)
        out[name] = float(np.median(times))
    return out


def waiting_cpu(comm, width: int, seconds: float = 1.0) -> dict[str, float]:
    """CPU seconds per wall second of rank 1 while rank 0 arrives ``seconds`` late, polled vs blocking."""
    size, rank = comm.Get_size(), comm.Get_rank()
    row, table = np.zeros(width, dtype=np.int64), np.empty((size, width), dtype=np.int64)
    out = {}
    for name in ("polled", "blocking"):
        comm.Barrier()
        if rank == 0:
            time.sleep(seconds)
        wall, cpu = time.perf_counter(), time.process_time()
        if name == "polled":
            poll(comm.Iallgather(row, table), 600)
        else:
            comm.Allgather(row, table)
        share = (time.process_time() - cpu) / (time.perf_counter() - wall)
        out[name] = comm.bcast(share if rank == 1 else None, root=1)
    return out


def run_bench_mpi(preset_name: str, threads: int, steps: int, latency_us: float, gbps: float) -> dict | None:
    """Measure on every rank; rank 0 returns the report (the others None)."""
    comm = import_mpi().COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    cfg = preset_config(preset_name)
    engine = Engine(cfg, threads=threads)
    engine.init_weights(SEED)
    report: dict = {"preset": preset_name, "ranks": size, "threads_per_rank": threads, "steps": steps,
                    "pairs": cfg.pairs}
    if rank == 0:
        cpu = time.process_time()
        halves = one_process_halves(engine, steps)
        one_cpu = (time.process_time() - cpu) / steps
    poll(comm.Ibarrier(), 3600)  # the other ranks idle without spinning while rank 0 times one process
    halves, one_cpu = comm.bcast((halves, one_cpu) if rank == 0 else None, root=0)
    engine.init_weights(SEED)
    report.update({"one_process_step_s": halves.step, "evaluate_s": halves.evaluate, "update_s": halves.update,
                   "update_share": halves.update / halves.step})
    width = CONTROL_WORDS + 2 * max(b - a for a, b in pair_shares(cfg.pairs, size))
    if size > 1:
        measured = distributed_steps(comm, engine, steps, first=0)
        digest = hashlib.sha256(engine.weights.tobytes() + engine.vote_memory.tobytes()).hexdigest()
        report.update({
            "distributed_step_s": measured["step"], "exchange_wait_s": measured["exchange_wait"],
            "exchange_share": measured["exchange_wait"] / measured["step"],
            "efficiency": halves.step / (size * measured["step"]),
            "one_process_cpu_s": one_cpu, "distributed_cpu_s": measured["cpu"],
            "cpu_efficiency": one_cpu / (size * measured["cpu"]),
            "weights_agree": len(set(comm.allgather(digest))) == 1,
        })
        collective = collective_seconds(comm, width, repeats=500)
        report.update({"allgather_polled_s": collective["polled"], "allgather_blocking_s": collective["blocking"],
                       "allgather_share": collective["polled"] / measured["step"]})
        report["waiting_cpu"] = waiting_cpu(comm, width)
    latency, bandwidth = latency_us * 1e-6, gbps * 1e9 / 8
    report["model"] = {
        "latency_us": latency_us, "gbps": gbps,
        "ranks": {str(n): {"bytes_per_step": exchange_bytes(cfg.pairs, n),
                           "exchange_us": 1e6 * exchange_seconds(cfg.pairs, n, latency, bandwidth),
                           "efficiency": efficiency(halves, n, exchange_seconds(cfg.pairs, n, latency, bandwidth))}
                  for n in MODEL_RANKS if n <= cfg.pairs},
        # The alternative: each rank updates 1/N of the weights, then all-gathers them (int8, n_weights bytes).
        "sliced_update_efficiency_16": halves.step / (16 * (halves.step / 16 + exchange_seconds(
            cfg.pairs, 16, latency, bandwidth) + math.ceil(math.log2(16)) * latency + n_weights(cfg) / bandwidth)),
        "weights_bytes": n_weights(cfg),
    }
    return report if rank == 0 else None


def format_report(r: dict) -> str:
    ms = 1e3
    lines = [
        f"preset {r['preset']}: {r['pairs']} pairs, {r['ranks']} ranks x {r['threads_per_rank']} threads, "
        f"medians of {r['steps']} steps",
        f"one process      step {r['one_process_step_s'] * ms:8.2f} ms = evaluate {r['evaluate_s'] * ms:.2f} ms "
        f"(split among ranks) + update {r['update_s'] * ms:.2f} ms (replicated: {r['update_share']:.1%})",
    ]
    if "distributed_step_s" in r:
        lines += [
            f"{r['ranks']} ranks          step {r['distributed_step_s'] * ms:8.2f} ms, of which waiting in the "
            f"exchange {r['exchange_wait_s'] * ms:.3f} ms ({r['exchange_share']:.1%}); parallel efficiency "
            f"{r['efficiency']:.1%}; weights agree: {r['weights_agree']}",
            f"{'':17}CPU per step {r['distributed_cpu_s'] * ms:.2f} ms on the busiest rank vs "
            f"{r['one_process_cpu_s'] * ms:.2f} ms in one process: efficiency {r['cpu_efficiency']:.1%} "
            "without the time a loaded machine deschedules a rank",
            f"all-gather alone {r['allgather_polled_s'] * 1e6:8.1f} us polled, "
            f"{r['allgather_blocking_s'] * 1e6:.1f} us blocking ({r['allgather_share']:.2%} of the distributed step)",
            f"waiting 1 s      rank 1 used {r['waiting_cpu']['polled']:.1%} of a core polled, "
            f"{r['waiting_cpu']['blocking']:.1%} in MPICH's blocking wait",
        ]
    m = r["model"]
    lines.append(f"model            T_N = evaluate/N + update + exchange; exchange = ceil(log2 N) x "
                 f"{m['latency_us']:.0f} us + bytes at {m['gbps']:g} Gb/s")
    for n, row in m["ranks"].items():
        lines.append(f"  N = {n:>3}  {row['bytes_per_step']:7,} bytes/step  exchange {row['exchange_us']:7.1f} us  "
                     f"efficiency {row['efficiency']:6.1%}")
    lines.append(f"  sliced update (each rank updates 1/N, then all-gathers {m['weights_bytes']:,} weight bytes): "
                 f"efficiency at N = 16 {m['sliced_update_efficiency_16']:.1%}")
    return "\n".join(lines)


@click.command("bench-mpi")
@click.option("--preset", "preset_name", type=click.Choice(list(PRESETS)), default="small", show_default=True,
              help="Model configuration to time.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="Threads per rank.")
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True,
              help="Steps per measurement (medians are reported).")
@click.option("--latency-us", type=float, default=50.0, show_default=True,
              help="Model: latency of one all-gather round between machines (TCP on a LAN: 15-50 us).")
@click.option("--gbps", type=float, default=1.0, show_default=True, help="Model: link bandwidth in Gbit/s.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the report.")
def bench_mpi_command(preset_name: str, threads: int, steps: int, latency_us: float, gbps: float,
                      as_json: bool) -> None:
    """Cost of distributing a step over MPI ranks: run under `mpiexec -n N` (docs/distributed.md)."""
    report = run_bench_mpi(preset_name, threads, steps, latency_us, gbps)
    if report is not None:
        click.echo(json.dumps(report, indent=2) if as_json else format_report(report))
