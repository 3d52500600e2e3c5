"""``python -m mlm.egg bench``: training throughput against the machine's measured int8 peak.

Times real :meth:`Engine.train_step` calls on random bytes (fixed seed) in two schedules, side
by side in one run:

* **batched** (``Engine(batched=True)``): blocks of members advance in lockstep, one int8 GEMM
  per weight matrix and time step;
* **member** (``Engine(batched=False)``): one member at a time, every matrix-vector product a
  SIMD dot product, as in the reference egg.c.

Work is counted in multiply-accumulates (MACs) per population-token, from the configuration
(:func:`macs_per_pop_token`). The peak is measured in the same run by a register-resident
microkernel of the active kernel's instructions on the same threads (``csrc/bench.c``), and
the GEMM kernel alone is timed on the step's shapes, so every fraction compares like with like.
"""

from __future__ import annotations

import json
import os
import random
import resource
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click
import numpy as np

from mlm.click_types import THREADS, FiniteFloatRange
from mlm.egg.config import KNOBS, PRESETS, ModelConfig
from mlm.egg.config import preset as preset_config
from mlm.egg.layout import MATRIX_KINDS, VOCAB, n_vote_memory, n_weights, tensor_layout
from mlm.errors import MlmError

if TYPE_CHECKING:
    from mlm.egg.engine import Engine

SCHEDULES = ("batched", "member", "both")
SEED = 1


def field_range(name: str) -> click.IntRange:
    """The accepted values of a size field (config.KNOBS), for the override options."""
    return click.IntRange(KNOBS[name].low, KNOBS[name].high)


def macs_per_pop_token(cfg: ModelConfig) -> int:
    """int8 multiply-accumulates one member spends on one token.

    Every weight matrix (the embedding is a row lookup, not a matmul) costs rows x cols MACs,
    and its rank-1 noise term cols MACs (x·B) plus rows multiplies (A scaled by x·B):

        layers * (4 H^2 + 2 H M) + 256 H  +  layers * (4 * 2H + 2 (H + M)) + (256 + H)

    with H = hidden and M = hidden * mlp_ratio: per layer the GRU's four H x H matrices and the
    MLP's up (M x H) and down (H x M), then the head (256 x H). Reference preset:
    12,713,984 + 37,632 = 12,751,616.
    """
    matrices = [t for t in tensor_layout(cfg) if t.kind in MATRIX_KINDS]
    return sum(t.rows * t.cols + t.rows + t.cols for t in matrices)


def gemm_macs_per_pop_token(cfg: ModelConfig) -> int:
    """The part of :func:`macs_per_pop_token` that the GEMM does: rows x cols of every weight matrix."""
    return sum(t.rows * t.cols for t in tensor_layout(cfg) if t.kind in MATRIX_KINDS)


def bench_config(preset: str, overrides: dict[str, int] | None = None) -> ModelConfig:
    """``preset`` with ``overrides`` (ModelConfig fields) applied as ``train`` applies them, and checked."""
    return preset_config(preset).overridden(**(overrides or {})).validate()


def step_memory_bytes(cfg: ModelConfig, threads: int) -> int:
    """Weights + vote memory + every recurrent state + the most one training step holds at once in the core.

    The step keeps every pair's noise (A and B of every tensor) and then needs either, in the
    forward pass, one workspace per running population block (activations, perturbed vectors,
    int32 accumulators: csrc/forward.c), or in the update, per running task, a block of about 4K
    int32 votes, its rows of A and its tensor's B, transposed, and 8 voters' rows of either (csrc/es.c).
    """
    layout = tensor_layout(cfg)
    h, m = cfg.hidden, cfg.mlp_hidden
    noise = cfg.pairs * sum(t.rows + t.cols for t in layout)
    vectors = sum(t.cols for t in layout if t.kind in ("norm", "bias"))
    block = min(64, -(-cfg.population // threads))
    blocks = min(threads, -(-cfg.population // block))
    workspace = block * (3 * h + m + VOCAB + cfg.layers * h + vectors + 4 * max(m, VOCAB) + 4 * h)
    votes_per_task = 4096  # VOTES_PER_TASK in csrc/es.c
    task_rows = max(min(t.rows, max(1, votes_per_task // t.cols)) for t in layout)
    task_votes = max(min(t.rows, max(1, votes_per_task // t.cols)) * t.cols for t in layout)
    widest = max(task_rows, max(t.cols for t in layout))
    update = threads * (4 * task_votes + cfg.pairs * (task_rows + max(t.cols for t in layout)) + 8 * (widest + 16))
    state = cfg.population * cfg.layers * h
    memory = 2 * n_vote_memory(cfg)
    return n_weights(cfg) + memory + state + noise + max(blocks * workspace, update)


@dataclass
class ScheduleTiming:
    """Steps of one schedule: wall seconds and the core's phase seconds, summed."""

    seq_len: int
    steps: int = 0
    wall: float = 0.0
    noise: float = 0.0
    forward: float = 0.0
    update: float = 0.0


def new_engine(cfg: ModelConfig, threads: int, batched: bool) -> Engine:
    from mlm.egg.engine import Engine

    engine = Engine(cfg, threads=threads, batched=batched)
    engine.init_weights(SEED)
    return engine


def time_steps(engine: Engine, seconds: float) -> ScheduleTiming:
    """Train on random windows until ``seconds`` have passed (at least one step)."""
    from mlm.egg.engine import lib

    cfg = engine.config
    rng = random.Random(SEED)  # not numpy.random: importing it alone adds ~6 MB to the peak RSS
    timing = ScheduleTiming(cfg.seq_len)
    while timing.steps == 0 or timing.wall < seconds:
        data = rng.randbytes(cfg.streams * (cfg.seq_len + 1))
        windows = np.frombuffer(data, np.uint8).reshape(cfg.streams, cfg.seq_len + 1)
        start = time.perf_counter()
        engine.train_step(SEED, timing.steps, windows)
        timing.wall += time.perf_counter() - start
        phases = lib.egg_last_step_seconds()
        timing.noise += phases.noise
        timing.forward += phases.forward
        timing.update += phases.update
        timing.steps += 1
    return timing


def member_schedule(cfg: ModelConfig, threads: int, seconds: float) -> tuple[ScheduleTiming, float]:
    """Time the member-at-a-time schedule; return its timing and population-tokens/s at cfg.seq_len.

    One step of the full sequence can take minutes, so a one-token step first measures the
    forward time per token and the sequence is shortened to fit about half of ``seconds`` per
    step. The rate is then normalised per population-token: forward seconds per token times
    cfg.seq_len, plus the step's fixed costs (noise, update, call overhead) once per step.
    """
    probe = time_steps(new_engine(cfg.replace(seq_len=1), threads, False), 0.0)
    seq_len = int(min(cfg.seq_len, max(1, 0.5 * seconds / max(probe.forward, 1e-9))))
    timing = time_steps(new_engine(cfg.replace(seq_len=seq_len), threads, False), seconds)
    per_token = timing.forward / timing.steps / seq_len
    fixed = (timing.wall - timing.forward) / timing.steps
    return timing, cfg.population * cfg.seq_len / (per_token * cfg.seq_len + fixed)


def peak_rss_mb() -> float:
    """The process's peak resident set (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def measured(value: float, what: str) -> float:
    """A rate from the core: negative means it failed (egg_last_error says why)."""
    from mlm.egg.engine import _check

    if value < 0:
        _check(-1)
    if value == 0:
        raise MlmError(f"{what} measured zero work")
    return value


def run_bench(preset: str, seconds: float, threads: int, schedule: str,
              overrides: dict[str, int] | None = None, thread_scaling: bool = False) -> dict:
    """Benchmark ``schedule`` ("batched", "member" or "both") of ``preset`` on ``threads`` threads.

    ``seconds`` is the time budget of each schedule (a step is never cut short); ``overrides``
    replaces ModelConfig fields of the preset (hidden, layers, mlp_ratio, seq_len, population).
    With ``thread_scaling`` and more than one thread, the batched schedule is also timed on one
    thread, for the thread efficiency. Returns one flat dict: see docs/performance.md for every key.
    """
    if schedule not in SCHEDULES:
        raise MlmError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if threads < 1:
        raise MlmError(f"--threads must be at least 1 (got {threads})")
    # The core loads here, not at import: the CLI starts (and --help works) without a build.
    from mlm.egg.engine import kernel_name, lib, parallel_backend
    cfg = bench_config(preset, overrides)
    macs = macs_per_pop_token(cfg)
    short = min(2.0, max(0.2, seconds / 10))
    rss_before = peak_rss_mb()
    out: dict = {
        "preset": preset, "kernel": kernel_name(), "parallel": parallel_backend(), "threads": threads,
        "hidden": cfg.hidden, "layers": cfg.layers, "mlp_ratio": cfg.mlp_ratio, "seq_len": cfg.seq_len,
        "population": cfg.population, "macs_per_pop_token": macs,
    }
    peak = measured(lib.egg_peak_macs_per_second(threads, short), "the peak microkernel")
    out["peak_gmacs"] = peak / 1e9

    batched_rate = member_rate = None
    if schedule in ("batched", "both"):
        engine = new_engine(cfg, threads, True)
        timing = time_steps(engine, seconds)
        batched_rate = cfg.population * cfg.seq_len * timing.steps / timing.wall
        # The GEMM alone, on this engine's shapes and weights (Engine keeps the model handle private).
        gemm = measured(lib.egg_gemm_macs_per_second(engine._model, short), "the GEMM")
        del engine  # one model in memory at a time: peak RSS counts one
        step_ns, gemm_ns = 1e9 / batched_rate, 1e9 * gemm_macs_per_pop_token(cfg) / gemm
        out.update({
            "batched_steps": timing.steps, "batched_seconds": timing.wall,
            "batched_pop_tok_per_s": batched_rate,
            "noise_fraction": timing.noise / timing.wall, "forward_fraction": timing.forward / timing.wall,
            "update_fraction": timing.update / timing.wall,
            "gemm_gmacs": gemm / 1e9, "gemm_fraction_of_peak": gemm / peak,
            "step_ns_per_pop_token": step_ns, "gemm_ns_per_pop_token": gemm_ns,
            "non_gemm_ns_per_pop_token": step_ns - gemm_ns,
        })
        if thread_scaling and threads > 1:
            one = time_steps(new_engine(cfg, 1, True), seconds)
            one_rate = cfg.population * cfg.seq_len * one.steps / one.wall
            out.update({"one_thread_pop_tok_per_s": one_rate,
                        "thread_efficiency": batched_rate / (threads * one_rate)})
    if schedule in ("member", "both"):
        timing, member_rate = member_schedule(cfg, threads, seconds)
        out.update({
            "member_steps": timing.steps, "member_seconds": timing.wall, "member_seq_len": timing.seq_len,
            "member_pop_tok_per_s": member_rate, "member_fraction_of_peak": member_rate * macs / peak,
        })
        if timing.seq_len < cfg.seq_len:
            out["member_note"] = (
                f"member schedule ran seq_len {timing.seq_len}, not {cfg.seq_len}: its rate is normalised "
                f"per population-token (forward time per token x {cfg.seq_len}, plus noise, update and "
                "call overhead once per step)")
        if schedule == "member":
            out["update_fraction"] = timing.update / timing.wall

    rate = batched_rate if batched_rate is not None else member_rate
    model_mb = step_memory_bytes(cfg, threads) / 2**20
    rss = peak_rss_mb()
    out.update({
        "pop_tok_per_s": rate,
        "speedup_vs_member": batched_rate / member_rate if batched_rate and member_rate else None,
        "achieved_gmacs": rate * macs / 1e9,
        "fraction_of_peak": rate * macs / peak,
        "peak_rss_mb": rss, "interpreter_rss_mb": rss_before, "model_mb": model_mb,
        "rss_over_model": rss / model_mb,
    })
    return out


def format_report(r: dict) -> str:
    """The human-readable report of :func:`run_bench`."""

    def rate_line(label: str, rate: float) -> str:
        return f"{label:18}{rate:10,.0f} pop-tokens/s {rate * r['macs_per_pop_token'] / 1e9:8.1f} GMAC/s"

    lines = [
        f"preset {r['preset']} (hidden {r['hidden']}, layers {r['layers']}, mlp_ratio {r['mlp_ratio']}, "
        f"seq_len {r['seq_len']}, "
        f"population {r['population']}): kernel {r['kernel']}, {r['threads']} threads ({r['parallel']})",
        f"{'work':18}{r['macs_per_pop_token']:,} int8 MACs per population-token",
        f"{'peak':18}{r['peak_gmacs']:8.1f} GMAC/s (microkernel of this kernel's instructions, same threads)",
    ]
    if "batched_pop_tok_per_s" in r:
        lines += [
            rate_line("batched", r["batched_pop_tok_per_s"]) + f" {r['fraction_of_peak']:6.1%} of peak "
            f"({r['batched_steps']} steps, {r['batched_seconds']:.1f} s)",
            f"{'  step time':18}noise {r['noise_fraction']:.2%}, forward {r['forward_fraction']:.2%}, "
            f"update {r['update_fraction']:.2%}",
            f"{'  GEMM alone':18}{r['gemm_gmacs']:8.1f} GMAC/s {r['gemm_fraction_of_peak']:6.1%} of peak",
            f"{'  per pop-token':18}{r['step_ns_per_pop_token']:8.1f} ns = GEMM alone {r['gemm_ns_per_pop_token']:.1f} "
            f"+ non-GEMM {r['non_gemm_ns_per_pop_token']:.1f} (wall ns on {r['threads']} threads)",
        ]
        if "thread_efficiency" in r:
            lines.append(f"{'  1 thread':18}{r['one_thread_pop_tok_per_s']:10,.0f} pop-tokens/s: {r['threads']} "
                         f"threads are {r['thread_efficiency']:.0%} of {r['threads']} x 1 thread")
    if "member_pop_tok_per_s" in r:
        lines.append(rate_line("member", r["member_pop_tok_per_s"])
                     + f" {r['member_fraction_of_peak']:6.1%} of peak ({r['member_steps']} steps of "
                     f"seq_len {r['member_seq_len']}, {r['member_seconds']:.1f} s)")
        if "member_note" in r:
            lines.append(f"  note: {r['member_note']}")
    if r["speedup_vs_member"] is not None:
        lines.append(f"{'speedup':18}{r['speedup_vs_member']:.1f}x batched over member")
    lines.append(f"{'peak RSS':18}{r['peak_rss_mb']:.1f} MB = {r['rss_over_model']:.2f}x the model's "
                 f"{r['model_mb']:.1f} MB (weights + states + one step's buffers); the interpreter alone "
                 f"held {r['interpreter_rss_mb']:.1f} MB")
    return "\n".join(lines)


@click.command("bench")
@click.option("--preset", "preset_name", type=click.Choice(list(PRESETS)), default="reference",
              show_default=True, help="Model configuration to time.")
@click.option("--seconds", type=FiniteFloatRange(0, None, min_open=True), default=20.0, show_default=True,
              help="Time budget per schedule (at least one whole step runs).")
@click.option("--threads", type=THREADS, default=lambda: os.cpu_count() or 1, show_default="all cores",
              help="Worker threads.")
@click.option("--schedule", type=click.Choice(SCHEDULES), default="both", show_default=True,
              help="batched: population GEMMs; member: one member at a time (SIMD dot products).")
@click.option("--hidden", type=field_range("hidden"), help="Override the preset's model width.")
@click.option("--layers", type=field_range("layers"), help="Override the preset's number of layers.")
@click.option("--mlp-ratio", type=field_range("mlp_ratio"),
              help="Override the preset's MLP width over the model width.")
@click.option("--seq-len", type=field_range("seq_len"),
              help="Override the preset's tokens per member per step.")
@click.option("--population", type=field_range("population"),
              help="Override the preset's members per step (the data windows follow, as in train).")
@click.option("--thread-scaling", is_flag=True,
              help="Also time the batched schedule on one thread and report the thread efficiency.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the report.")
def bench_command(preset_name: str, seconds: float, threads: int, schedule: str, hidden: int | None,
                  layers: int | None, mlp_ratio: int | None, seq_len: int | None, population: int | None,
                  thread_scaling: bool, as_json: bool) -> None:
    """Time training steps and compare them with this machine's measured int8 peak."""
    overrides = {"hidden": hidden, "layers": layers, "mlp_ratio": mlp_ratio, "seq_len": seq_len,
                 "population": population}
    result = run_bench(preset_name, seconds, threads, schedule, overrides, thread_scaling)
    click.echo(json.dumps(result, indent=2) if as_json else format_report(result))
