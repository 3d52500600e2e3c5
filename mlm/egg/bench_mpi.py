"""``python -m mlm.egg bench-mpi``: what splitting a training step across MPI ranks costs.

Run it under a launcher, ``mpiexec -n 2 python -m mlm.egg bench-mpi --preset small --threads 1``
(alone it is N = 1). Rank 0 prints:

* the two halves of a one-process step, interleaved in one process: evaluating the pairs (noise and
  forward: divided among the ranks) and the update (fitness, noise regenerated, vote); and, in the same
  steps, the update of each rank's slice for N = 2..16 (the slowest slice counts, its moves packed) and
  the cost of applying every slice's packed moves;
* with N > 1, distributed steps as training runs them (each rank evaluates its share, the member
  losses are all-gathered with the polled wait, then every rank applies the whole update — replicated —
  or its slice, after which the moves are all-gathered — sliced): the step time, the time spent in the
  exchanges, and the parallel efficiency T1 / (N * T_N) against one-process steps timed in the same job
  while the other ranks idle;
* the all-gather alone at the exchange's size, polled (as training waits) and blocking;
* the CPU a rank burns while it waits one second in the exchange: polled, and MPICH's blocking wait;
* a model of a step at N ranks from those measurements: replicated ``T_eval / N + T_update + T_exchange(N)``,
  sliced ``T_eval / N + T_slice(N) + T_apply_moves + T_exchange(N) + T_moves(N)``, each all-gather as
  ``ceil(log2 N)`` latencies plus the gathered bytes over the link; and the sliced update with a population
  that grows with the ranks (``--population N x P``, each rank keeping the preset's P members):
  ``T_eval + N x T_slice(N) + T_apply_moves + T_exchange(N, N x pairs) + T_moves(N)`` against ``T1`` (a slice's
  vote, transposes and noise grow with its voters, so N times the pairs cost N times the slice).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
import traceback
from dataclasses import dataclass

import click
import numpy as np

from mlm.egg.config import PRESETS
from mlm.egg.config import preset as preset_config
from mlm.egg.distributed import (
    CONTROL_WORDS,
    import_mpi,
    pair_shares,
    poll,
    share_moves,
    task_shares,
)
from mlm.egg.engine import Engine, packed_moves_size

MODEL_RANKS = (1, 2, 4, 8, 16)
SEED = 1


@dataclass
class Halves:
    """Median seconds of the two halves of a step, of the slowest rank's slice of the update at N ranks
    (for N in MODEL_RANKS above 1, packing its moves included), and of applying every weight's packed moves."""

    evaluate: float
    update: float
    slice_update: dict[int, float]
    apply_moves: float
    #: CPU seconds of one step (evaluate and update, not the slices' timing)
    cpu: float

    @property
    def step(self) -> float:
        return self.evaluate + self.update


def exchange_bytes(pairs: int, ranks: int) -> int:
    """Bytes every rank receives per step: one row per rank, control words and the largest share's losses."""
    largest = max(p1 - p0 for p0, p1 in pair_shares(pairs, ranks))
    return ranks * (CONTROL_WORDS + 2 * largest) * 8


def exchange_seconds(pairs: int, ranks: int, latency: float, bytes_per_second: float) -> float:
    """Modelled all-gather time: recursive doubling, ceil(log2 N) rounds of latency, all rows over the link."""
    return all_gather_seconds(exchange_bytes(pairs, ranks), ranks, latency, bytes_per_second)


def efficiency(halves: Halves, ranks: int, exchange: float) -> float:
    """T1 / (N * T_N) with T_N = T_eval / N + T_update + T_exchange."""
    return halves.step / (ranks * (halves.evaluate / ranks + halves.update + exchange))


def moves_bytes(engine: Engine, ranks: int) -> int:
    """Bytes every rank receives per step in a sliced update's exchange of moves (its own included)."""
    slices = [engine.update_task_weights(t0, t1) for t0, t1 in task_shares(engine, ranks)]
    return sum(packed_moves_size(end - first) for first, end in slices)


def all_gather_seconds(size: int, ranks: int, latency: float, bytes_per_second: float) -> float:
    """Modelled all-gather of ``size`` bytes in all: ceil(log2 N) rounds of latency, every byte over the link."""
    return 0.0 if ranks == 1 else math.ceil(math.log2(ranks)) * latency + size / bytes_per_second


def sliced_efficiency(halves: Halves, ranks: int, exchange: float, moves: float) -> float:
    """T1 / (N * T_N) with T_N = T_eval / N + T_slice(N) + T_apply_moves + T_exchange + T_moves."""
    if ranks == 1:
        return 1.0
    return halves.step / (ranks * (halves.evaluate / ranks + halves.slice_update[ranks] + halves.apply_moves
                                   + exchange + moves))


def grown_efficiency(halves: Halves, ranks: int, exchange: float, moves: float) -> float:
    """T1 / T_N for N x the population, each rank evaluating the preset's members: members per second per rank
    against one process. T_N = T_eval + N x T_slice(N) + T_apply_moves + T_exchange(N x pairs) + T_moves."""
    if ranks == 1:
        return 1.0
    return halves.step / (halves.evaluate + ranks * halves.slice_update[ranks] + halves.apply_moves + exchange
                          + moves)


def _windows(cfg, step: int) -> np.ndarray:
    rng = np.random.default_rng(SEED + step)
    return rng.integers(0, 256, (cfg.streams, cfg.seq_len + 1)).astype(np.uint8)


def one_process_halves(engine: Engine, steps: int) -> Halves:
    """Steps of one process; before each update, every rank's slice of it for each N, from the same weights."""
    cfg = engine.config
    evaluate, update, apply_moves, cpu = [], [], [], []
    slices: dict[int, list[float]] = {n: [] for n in MODEL_RANKS if n > 1}
    for step in range(steps):
        windows = _windows(cfg, step)
        cpu_start = time.process_time()
        t0 = time.perf_counter()
        losses = engine.evaluate_pairs(SEED, step, windows, 0, cfg.pairs)
        t1 = time.perf_counter()
        evaluate.append(t1 - t0)
        cpu.append(time.process_time() - cpu_start)
        weights, memory = engine.weights.copy(), engine.vote_memory.copy()
        for n, times in slices.items():
            slowest = 0.0
            for t_0, t_1 in task_shares(engine, n):
                engine.weights[:], engine.vote_memory[:] = weights, memory
                started = time.perf_counter()
                engine.apply_update_tasks(SEED, step, windows, losses, t_0, t_1)
                slowest = max(slowest, time.perf_counter() - started)
            times.append(slowest)
        engine.weights[:], engine.vote_memory[:] = weights, memory
        t2 = time.perf_counter()
        cpu_start = time.process_time()
        engine.apply_update(SEED, step, windows, losses)
        update.append(time.perf_counter() - t2)
        cpu[-1] += time.process_time() - cpu_start
        after = engine.weights.copy()
        engine.weights[:], engine.vote_memory[:] = weights, memory
        _, moves = engine.apply_update_tasks(SEED, step, windows, losses, 0, engine.update_tasks())
        engine.weights[:] = weights
        t3 = time.perf_counter()
        engine.apply_moves(0, weights.size, moves)
        apply_moves.append(time.perf_counter() - t3)
        assert np.array_equal(engine.weights, after), "the update's moves do not give its weights"
    return Halves(float(np.median(evaluate)), float(np.median(update)),
                  {n: float(np.median(times)) for n, times in slices.items()}, float(np.median(apply_moves)),
                  float(np.mean(cpu)))


def distributed_steps(comm, engine: Engine, steps: int, first: int, sliced: bool) -> dict[str, float]:
    """Training's step loop on every rank, its update replicated or sliced; rank 0's median step and exchange
    seconds, and the CPU seconds of the busiest rank."""
    cfg, rank, size = engine.config, comm.Get_rank(), comm.Get_size()
    shares = pair_shares(cfg.pairs, size)
    p0, p1 = shares[rank]
    width = CONTROL_WORDS + 2 * max(b - a for a, b in shares)
    row, table = np.zeros(width, dtype=np.int64), np.empty((size, width), dtype=np.int64)
    tasks = task_shares(engine, size)
    weight_slices = [engine.update_task_weights(t0, t1) for t0, t1 in tasks]
    step_s, wait_s, moves_s, cpu_s = [], [], [], []

    def wait(request) -> None:
        started = time.perf_counter()
        poll(request, 600)
        moves_s.append(time.perf_counter() - started)

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
        if sliced:
            _, moves = engine.apply_update_tasks(SEED, step, windows, losses, *tasks[rank])
            share_moves(comm, engine, weight_slices, moves, wait)
        else:
            engine.apply_update(SEED, step, windows, losses)
        step_s.append(time.perf_counter() - t0)
        wait_s.append(t2 - t1)
        cpu_s.append(time.process_time() - cpu)
    # CPU seconds leave out the time a rank is descheduled on a loaded machine: the slowest rank's median.
    return {"step": float(np.median(step_s)), "exchange_wait": float(np.median(wait_s)),
            "moves_wait": float(np.median(moves_s)) if moves_s else 0.0,
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
        halves = one_process_halves(engine, steps)
    poll(comm.Ibarrier(), 3600)  # the other ranks idle without spinning while rank 0 times one process
    halves = comm.bcast(halves if rank == 0 else None, root=0)
    one_cpu = halves.cpu
    engine.init_weights(SEED)
    report.update({"one_process_step_s": halves.step, "evaluate_s": halves.evaluate, "update_s": halves.update,
                   "update_share": halves.update / halves.step})
    width = CONTROL_WORDS + 2 * max(b - a for a, b in pair_shares(cfg.pairs, size))
    if size > 1:
        measured = distributed_steps(comm, engine, steps, first=0, sliced=False)
        digest = hashlib.sha256(engine.weights.tobytes() + engine.vote_memory.tobytes()).hexdigest()
        engine.init_weights(SEED)
        sliced = distributed_steps(comm, engine, steps, first=0, sliced=True)
        report["sliced"] = {
            "distributed_step_s": sliced["step"], "exchange_wait_s": sliced["exchange_wait"],
            "moves_wait_s": sliced["moves_wait"], "efficiency": halves.step / (size * sliced["step"]),
            "cpu_efficiency": one_cpu / (size * sliced["cpu"]),
            "weights_agree": len(set(comm.allgather(hashlib.sha256(engine.weights.tobytes()).hexdigest()))) == 1,
        }
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
    report.update({"slice_update_s": {str(n): t for n, t in halves.slice_update.items()},
                   "apply_moves_s": halves.apply_moves})
    latency, bandwidth = latency_us * 1e-6, gbps * 1e9 / 8
    rows = {}
    for n in (n for n in MODEL_RANKS if n <= cfg.pairs):
        exchange = exchange_seconds(cfg.pairs, n, latency, bandwidth)
        moves = all_gather_seconds(moves_bytes(engine, n), n, latency, bandwidth)
        grown_exchange = exchange_seconds(n * cfg.pairs, n, latency, bandwidth)
        rows[str(n)] = {"bytes_per_step": exchange_bytes(cfg.pairs, n), "exchange_us": 1e6 * exchange,
                        "efficiency": efficiency(halves, n, exchange),
                        "moves_bytes_per_step": moves_bytes(engine, n) if n > 1 else 0, "moves_us": 1e6 * moves,
                        "sliced_efficiency": sliced_efficiency(halves, n, exchange, moves),
                        "grown_efficiency": grown_efficiency(halves, n, grown_exchange, moves)}
    report["model"] = {"latency_us": latency_us, "gbps": gbps, "ranks": rows}
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
        sliced = r["sliced"]
        lines += [
            f"{r['ranks']} ranks, replicated update: step {r['distributed_step_s'] * ms:.2f} ms, of which waiting in "
            f"the exchange {r['exchange_wait_s'] * ms:.3f} ms ({r['exchange_share']:.1%}); parallel efficiency "
            f"{r['efficiency']:.1%}; weights agree: {r['weights_agree']}",
            f"{'':17}CPU per step {r['distributed_cpu_s'] * ms:.2f} ms on the busiest rank vs "
            f"{r['one_process_cpu_s'] * ms:.2f} ms in one process: efficiency {r['cpu_efficiency']:.1%} "
            "without the time a loaded machine deschedules a rank",
            f"all-gather alone {r['allgather_polled_s'] * 1e6:8.1f} us polled, "
            f"{r['allgather_blocking_s'] * 1e6:.1f} us blocking ({r['allgather_share']:.2%} of the distributed step)",
            f"{r['ranks']} ranks, sliced update: step {sliced['distributed_step_s'] * ms:.2f} ms, waiting for the "
            f"losses {sliced['exchange_wait_s'] * ms:.3f} ms and the moves {sliced['moves_wait_s'] * ms:.3f} ms; "
            f"parallel efficiency {sliced['efficiency']:.1%} (CPU {sliced['cpu_efficiency']:.1%}); "
            f"weights agree: {sliced['weights_agree']}",
            f"waiting 1 s      rank 1 used {r['waiting_cpu']['polled']:.1%} of a core polled, "
            f"{r['waiting_cpu']['blocking']:.1%} in MPICH's blocking wait",
        ]
    m = r["model"]
    slices = ", ".join(f"N = {n}: {t * ms:.2f}" for n, t in r["slice_update_s"].items())
    lines += [
        f"sliced update    slowest rank's slice (ms) {slices}; applying every slice's moves "
        f"{r['apply_moves_s'] * ms:.2f} ms",
        "model            T_N = evaluate/N + update + exchange (replicated), evaluate/N + slice + apply moves + "
        "exchange + moves (sliced);",
        f"{'':17}each all-gather = ceil(log2 N) x {m['latency_us']:.0f} us + bytes at {m['gbps']:g} Gb/s",
    ]
    for n, row in m["ranks"].items():
        lines.append(f"  N = {n:>3}  losses {row['bytes_per_step']:6,} B {row['exchange_us']:6.1f} us, moves "
                     f"{row['moves_bytes_per_step']:6,} B {row['moves_us']:6.1f} us   efficiency replicated "
                     f"{row['efficiency']:6.1%}, sliced {row['sliced_efficiency']:6.1%}, sliced with N x the "
                     f"population {row['grown_efficiency']:6.1%}")
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
    try:
        report = run_bench_mpi(preset_name, threads, steps, latency_us, gbps)
    except Exception:  # the other ranks would wait in a collective for this one: end them all
        traceback.print_exc()
        sys.stderr.flush()
        import_mpi().COMM_WORLD.Abort(1)
        raise
    if report is not None:
        click.echo(json.dumps(report, indent=2) if as_json else format_report(report))
