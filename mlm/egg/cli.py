"""The ``python -m mlm.egg`` command line: thin click wrappers over importable functions."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from mlm import __version__
from mlm.egg.config import MAX_MEMORY_Z_Q8, PRESETS, preset
from mlm.egg.schedule import DEFAULT_COOLDOWN
from mlm.errors import MlmError

RUN_DIR = click.option("--run-dir", type=click.Path(path_type=Path), default=Path("egg-run"),
                       show_default=True, help="Run directory holding checkpoints and training.log.")
CKPT = click.option("--ckpt", default="latest", show_default=True,
                    help="Checkpoint: best, latest, a ring slot 0-9, or a file path.")


DEFAULT_TIME_BUDGET = 180.0


def default_threads() -> int:
    return os.cpu_count() or 1


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mlm")
def main() -> None:
    """mlm: train small byte-level language models with EGGROLL (int8, gradient-free).

    \b
    Typical workflow:
      ./scripts/build_threejs_dataset.sh          # harvest a corpus into input.txt
      python -m mlm.egg train                      # train (resumes after a crash)
      python -m mlm.egg sample --ckpt best         # generate text
    """


@main.command()
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Training corpus [default: ./input.txt, else the bundled Three.js sample].")
@RUN_DIR
@click.option("--preset", "preset_name", type=click.Choice(list(PRESETS)), default="small", show_default=True,
              help="Model size and algorithm settings; flags below override it.")
@click.option("--hidden", type=int, help="Model width (multiple of 16).")
@click.option("--layers", type=int, help="Number of GRU+MLP blocks.")
@click.option("--seq-len", type=int, help="Bytes per member per step.")
@click.option("--population", type=int, help="Members per step (even: +/- pairs).")
@click.option("--streams", type=int, help="Distinct data windows per step.")
@click.option("--noise-bits", type=int, help="Noise values u1 - u2 with u uniform on [0, 2^noise-bits).")
@click.option("--noise-shift", type=int, help="Perturbation scale: A*B >> noise-shift.")
@click.option("--shift-base", type=int, help="Matmul output shift: shift-base + floor(log2(inputs)/2).")
@click.option("--threshold-z", type=float,
              help="A weight moves when its vote (with vote memory: its summed votes) passes z vote spreads.")
@click.option("--vote-memory", type=click.IntRange(0, 1),
              help="1: votes add up across steps in a per-weight memory; 0: each step's vote alone.")
@click.option("--fitness-levels", type=int, help="Pair fitness: sign of the loss difference times 1..levels by "
                                                  "the rank of its size (1 = sign only).")
@click.option("--sparse-embedding-votes", type=click.IntRange(0, 1),
              help="1: only pairs whose window holds a byte vote on its embedding row.")
@click.option("--z-growth", type=int, help="The threshold grows as z*sqrt((t+G)/G) over G steps; 0 = constant.")
@click.option("--alpha-decay", type=int, help="Updated fraction D/(t+D); 0 = no decay.")
@click.option("--max-z", type=click.FloatRange(0, MAX_MEMORY_Z_Q8 / 256),
              help="Ceiling of the growing threshold, in vote spreads [preset: 16].")
@click.option("--weight-decay", type=click.FloatRange(0, 1),
              help="With vote memory: a matrix weight w pulls its memory towards 0 by w * this / 256 vote spreads "
                   "per step [preset: 0].")
@click.option("--vector-z", type=click.FloatRange(1 / 256, 16),
              help="Threshold of norm and bias vectors as a multiple of the matrices' [preset: 1].")
@click.option("--cooldown", type=click.FloatRange(0, 0.9), default=DEFAULT_COOLDOWN, show_default=True,
              help="Share of the run's steps over which the threshold rises so that weight moves fade out "
                   "(0: none). Fixed when a run starts: from --steps, or from the speed of the first steps "
                   "under --time-budget.")
@click.option("--threads", type=int, default=default_threads, show_default="all cores",
              help="Worker threads (results do not depend on it).")
@click.option("--seed", type=int, default=None, help="Run seed [default: 1].")
@click.option("--steps", type=int, help="Stop after this many steps in total.")
@click.option("--time-budget", type=float,
              help=f"Stop after this many seconds of this invocation [default: {DEFAULT_TIME_BUDGET:.0f} "
                   "when --steps is not given].")
@click.option("--print-every", type=int, default=10, show_default=True, help="Progress line interval (steps).")
@click.option("--sample-every", type=int, default=50, show_default=True, help="Sample interval (0: never).")
@click.option("--save-every", type=int, help="Checkpoint interval [default: --print-every].")
@click.option("--eval-every", type=int, default=0, show_default=True,
              help="Validation interval (0: off; best then follows training loss).")
@click.option("--eval-bytes", type=int, default=65536, show_default=True,
              help="Validation bytes scored at each evaluation.")
@click.option("--resume", type=click.Choice(["auto", "best", "none"]), default="auto", show_default=True,
              help="auto: latest valid slot; best: egg.ckpt.best; none: refuse existing checkpoints.")
@click.option("--fresh", is_flag=True, help="Move existing checkpoints to a dated subfolder and start over.")
@click.option("--results", type=click.Path(path_type=Path), default=Path("results.tsv"), show_default=True,
              help="Experiment table to append a row to.")
@click.option("--note", default="", help="Description for the results.tsv row.")
@click.option("--quiet", is_flag=True, help="Only errors on the terminal (training.log still gets everything).")
@click.option("--distributed", type=click.Choice(["auto", "off", "mpi"]), default="auto", show_default=True,
              help="Split each step's pairs across MPI processes (`mpiexec -n N python -m mlm.egg train`); "
                   "auto: when an MPI launcher started more than one (docs/distributed.md).")
def train(data, run_dir, preset_name, hidden, layers, seq_len, population, streams, noise_bits, noise_shift,
          shift_base, threshold_z, vote_memory, fitness_levels, sparse_embedding_votes, z_growth, alpha_decay,
          max_z, weight_decay, vector_z, cooldown, threads, seed, steps, time_budget, print_every, sample_every,
          save_every, eval_every, eval_bytes, resume, fresh, results, note, quiet, distributed) -> None:
    """Train a model with EGGROLL; re-run with the same --run-dir to resume exactly where it stopped."""
    from mlm.egg.train import TrainSettings
    from mlm.egg.train import train as run_training

    explicit = {k: v for k, v in {
        "hidden": hidden, "layers": layers, "seq_len": seq_len, "population": population, "streams": streams,
        "noise_bits": noise_bits, "noise_shift": noise_shift, "shift_base": shift_base,
        "alpha_decay_steps": alpha_decay, "z_growth_steps": z_growth, "vote_memory": vote_memory,
        "fitness_levels": fitness_levels, "sparse_embedding_votes": sparse_embedding_votes,
        "threshold_z_q8": None if threshold_z is None else round(threshold_z * 256),
        "max_z_q8": None if max_z is None else round(max_z * 256),
        "weight_decay_q8": None if weight_decay is None else round(weight_decay * 256),
        "vector_z_q8": None if vector_z is None else round(vector_z * 256),
    }.items() if v is not None}
    if threads < 1:
        raise MlmError(f"--threads must be at least 1 (got {threads})")
    for name, value in (("--steps", steps), ("--print-every", print_every), ("--save-every", save_every)):
        if value is not None and value < 1:
            raise MlmError(f"{name} must be at least 1 (got {value})")
    if steps is None and time_budget is None:
        time_budget = DEFAULT_TIME_BUDGET
    config = preset(preset_name).replace(**explicit).validate()
    settings = TrainSettings(
        config=config, run_dir=run_dir, data=data, explicit=explicit, seed=1 if seed is None else seed,
        seed_explicit=seed is not None, threads=threads, steps=steps, time_budget=time_budget, cooldown=cooldown,
        print_every=print_every, sample_every=sample_every, save_every=save_every, eval_every=eval_every,
        eval_bytes=eval_bytes, resume=resume, fresh=fresh, results=results, note=note,
        quiet=quiet, distributed=distributed,
    )
    sys.exit(run_training(settings))


@main.command()
@CKPT
@RUN_DIR
@click.option("--prompt", default="", help="Text the sample continues.")
@click.option("--prompt-file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Read the prompt from a file.")
@click.option("--length", type=int, default=400, show_default=True, help="Bytes to generate.")
@click.option("--temperature", type=float, default=0.8, show_default=True, help="0 = greedy.")
@click.option("--top-k", type=int, default=0, show_default=True, help="Keep the k likeliest bytes (0: all).")
@click.option("--min-p", type=float, default=0.0, show_default=True,
              help="Drop bytes less likely than min-p times the likeliest.")
@click.option("--presence-penalty", type=float, default=0.0, show_default=True,
              help="Bits subtracted from bytes already seen.")
@click.option("--stop", "stop_at", default=None, help="Stop after this string is generated.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same text.")
@click.option("--raw", is_flag=True, help="Write raw bytes even to a terminal.")
def sample(ckpt, run_dir, prompt, prompt_file, length, temperature, top_k, min_p, presence_penalty, stop_at,
           seed, raw) -> None:
    """Generate text from a checkpoint, streamed to stdout."""
    from mlm.egg.checkpoint import RunDir
    from mlm.egg.engine import Engine
    from mlm.egg.sample import SamplingOptions, generate, printable
    from mlm.egg.train import expected_sizes

    if length < 0:
        raise MlmError(f"--length must be >= 0 (got {length})")
    checkpoint = RunDir(run_dir, expected_sizes).resolve(ckpt)
    engine = Engine(checkpoint.config)
    engine.weights[:] = checkpoint.weights
    prompt_bytes = prompt_file.read_bytes() if prompt_file else prompt.encode()
    options = SamplingOptions(temperature, top_k, min_p, presence_penalty, seed).validate()
    safe = sys.stdout.isatty() and not raw
    out = sys.stdout.buffer
    stop_bytes = stop_at.encode() if stop_at else None
    produced = bytearray()
    for byte in generate(engine, prompt_bytes, length, options):
        produced.append(byte)
        out.write(printable(bytes([byte])).encode() if safe else bytes([byte]))
        out.flush()
        if stop_bytes and produced.endswith(stop_bytes):
            break
    out.write(b"\n")


@main.command(name="eval")
@CKPT
@RUN_DIR
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Score all of this file (e.g. input.holdout.txt) instead of the run's validation split.")
@click.option("--max-bytes", type=click.IntRange(min=1), default=None, help="Score at most this many bytes.")
@click.option("--breakdown", is_flag=True,
              help="Also print bits per byte per category (hand-written, vendored, minified) and folder, the "
                   "files with the most bits, and the top-1 next-byte accuracy.")
@click.option("--threads", type=click.IntRange(min=1), default=default_threads, show_default="all cores",
              help="Worker threads (the result does not depend on it).")
@click.option("--results", type=click.Path(path_type=Path), default=Path("results.tsv"), show_default=True,
              help="Experiment table the evaluation appends its row to.")
@click.option("--note", default="", help="Description for the results.tsv row.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_command(ckpt, run_dir, data, max_bytes, breakdown, threads, results, note, as_json) -> None:
    """Validation bits per byte of a checkpoint (lower is better).

    The figure covers the whole validation split as harvested (every file the pinned split holds);
    --breakdown shows how it divides between files, so no single file can dominate it unseen.
    """
    from mlm.egg.checkpoint import RunDir
    from mlm.egg.evaluate import breakdown as score_parts
    from mlm.egg.evaluate import eval_bytes_of, evaluate
    from mlm.egg.logbook import ResultRow, append_result, check_results_file, compact_config
    from mlm.egg.train import expected_sizes

    check_results_file(results)
    checkpoint = RunDir(run_dir, expected_sizes).resolve(ckpt)
    run_data = checkpoint.extra.get("data_path")
    text = eval_bytes_of(data, Path(run_data) if run_data else None, max_bytes)
    parts = score_parts(checkpoint, text, threads) if breakdown else None
    result = parts.result if parts else evaluate(checkpoint, text, threads)
    append_result(results, ResultRow(
        val_bpb=result.val_bpb, train_loss=checkpoint.metrics["train_loss"], status="ok", steps=checkpoint.step,
        seconds=result.seconds, pop_tok_per_s=0.0, run_dir=str(run_dir),
        config=compact_config(checkpoint.config, checkpoint.run_seed), description=note or f"eval {result.source}"))
    if as_json:
        report = {"val_bpb": result.val_bpb, "bytes": result.bytes_evaluated, "seconds": result.seconds,
                  "source": result.source, "step": checkpoint.step, "config": checkpoint.config.to_dict()}
        if parts:
            report["breakdown"] = parts.to_dict()
        click.echo(json.dumps(report))
        return
    click.echo(f"val_bpb: {result.val_bpb:.6f}")
    click.echo(f"bytes:   {result.bytes_evaluated} of {result.source}, {result.seconds:.2f}s", err=True)
    if parts:
        click.echo("\n".join(parts.lines()))


@main.command()
@click.option("--ckpt", default="best", show_default=True,
              help="Checkpoint: best, latest, a ring slot 0-9, or a file path.")
@RUN_DIR
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="The training corpus [default: the one the checkpoint records].")
@click.option("--prompts", "prompts_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help=r"UTF-8 file, one prompt per line; \t, \n and \\ stand for a tab, a newline and a backslash; "
                   "blank lines are skipped [default: eight Three.js-style openings].")
@click.option("--samples", type=int, default=16, show_default=True,
              help="Samples per sampler; sample i continues prompt i mod the number of prompts with seed --seed + i.")
@click.option("--length", type=int, default=256, show_default=True, help="Bytes generated per sample.")
@click.option("--temperature", type=float, default=0.5, show_default=True, help="0 = greedy.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the first sample.")
@click.option("--orders", default="0,1,2", show_default=True,
              help="Kneser-Ney baseline orders to compare with, comma-separated (0 unigram, 1 bigram, ...).")
@click.option("--accuracy-bytes", type=int, default=None,
              help="Score top-1 accuracy on the first this many validation bytes [default: all].")
@click.option("--threads", type=int, default=default_threads, show_default="all cores",
              help="Worker threads for the top-1 accuracy (the result does not depend on it).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, per-sample values included.")
def judge(ckpt, run_dir, data, prompts_file, samples, length, temperature, seed, orders, accuracy_bytes, threads,
          as_json) -> None:
    """Does it write JavaScript? Parse errors, brackets, identifiers and top-1 accuracy, beside Kneser-Ney."""
    from mlm.egg.baseline import parse_orders
    from mlm.egg.judge import JudgeSettings, read_prompts, run_judge

    settings = JudgeSettings(
        ckpt=ckpt, run_dir=run_dir, data=data, prompts=read_prompts(prompts_file), samples=samples,
        length=length, temperature=temperature, seed=seed, orders=tuple(parse_orders(orders)),
        accuracy_bytes=accuracy_bytes, threads=threads).validate()
    report = run_judge(settings, progress=lambda text: click.echo(text, err=True))
    click.echo(report.to_json() if as_json else f"{report.table()}\n\n{report.excerpts()}")


@main.group()
def ckpt() -> None:
    """Inspect checkpoints."""


@ckpt.command(name="list")
@RUN_DIR
@click.option("--json", "as_json", is_flag=True)
def ckpt_list(run_dir, as_json) -> None:
    """Every ring slot and the best file: step, time, losses, validity."""
    from mlm.egg.checkpoint import RunDir
    from mlm.egg.train import expected_sizes

    infos = RunDir(run_dir, expected_sizes).scan()
    rows = [{"name": i.name, "exists": i.exists, "valid": i.valid, "reason": i.reason, "step": i.step,
             "created": i.created, "train_loss": i.train_loss, "val_bpb": i.val_bpb,
             "best_metric": i.best_metric, "tracks": i.best_metric_name} for i in infos]
    if as_json:
        click.echo(json.dumps(rows))
        return
    from mlm.egg.display import format_metric

    for r in rows:
        if not r["exists"]:
            continue
        if not r["valid"]:
            click.echo(f"{r['name']:14} INVALID: {r['reason']}")
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"]))
        click.echo(f"{r['name']:14} step {r['step']:>7}  {when}  train_loss {format_metric(r['train_loss'])}  "
                   f"val_bpb {format_metric(r['val_bpb'])}  best {r['tracks']} {format_metric(r['best_metric'])}")
    if not any(r["exists"] for r in rows):
        click.echo(f"no checkpoints in {run_dir}")


@ckpt.command(name="show")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def ckpt_show(path, as_json) -> None:
    """Configuration, step, metrics and the weights' sha256 of one checkpoint file."""
    from mlm.egg.checkpoint import read_checkpoint
    from mlm.egg.train import expected_sizes

    if not path.exists():
        raise MlmError(f"{path} does not exist: pass a checkpoint file (see `python -m mlm.egg ckpt list`)")
    c = read_checkpoint(path, expected_sizes)
    info = {"path": str(path), "step": c.step, "run_seed": c.run_seed, "data_cursor": c.data_cursor,
            "weights_sha256": c.weights_sha256(), "state_sha256": c.state_sha256(), "metrics": c.metrics,
            "best_metric_name": c.best_metric_name, "created": c.created, "config": c.config.to_dict(),
            "extra": c.extra}
    if as_json:
        click.echo(json.dumps(info))
    else:
        for key, value in info.items():
            click.echo(f"{key:17} {value}")


@main.command()
@CKPT
@RUN_DIR
@click.argument("out", type=click.Path(path_type=Path))
def export(ckpt, run_dir, out) -> None:
    """Write the weights as named tensors to OUT (.safetensors or .npz), configuration in metadata."""
    from mlm.egg.checkpoint import RunDir, export_weights
    from mlm.egg.reference import tensor_layout
    from mlm.egg.train import expected_sizes

    checkpoint = RunDir(run_dir, expected_sizes).resolve(ckpt)
    tensors = [(t.name, t.rows, t.cols, t.offset) for t in tensor_layout(checkpoint.config)]
    click.echo(f"wrote {export_weights(checkpoint, out, tensors)}")


@main.command()
def info() -> None:
    """Show version, platform, compiler, SIMD kernels and the parallel backend."""
    from mlm.egg.machine import machine_info

    for key, value in machine_info().items():
        click.echo(f"{key:18} {value}")


@main.command()
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Corpus [default: ./input.txt, else the bundled Three.js sample].")
@click.option("--orders", default="0,1,2,3", show_default=True,
              help="Context lengths in bytes, comma-separated: 0 unigram, 1 bigram, 2 trigram, 3 4-gram.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def baseline(data, orders, as_json) -> None:
    """Kneser-Ney n-gram bits per byte on the validation split: the numbers a model has to beat."""
    from mlm.egg.baseline import baseline_report, parse_orders

    report = baseline_report(data, parse_orders(orders))
    if report.note:
        click.echo(report.note, err=True)
    click.echo(report.to_json() if as_json else report.lines())


@main.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--results", type=click.Path(path_type=Path), default=Path("results.tsv"), show_default=True,
              help="Experiment table every run appends its row to.")
@click.option("--dry-run", is_flag=True, help="Check CONFIG and print the commands without running them.")
def sweep(config, results, dry_run) -> None:
    """Train every configuration of CONFIG.toml for the same time budget (see sweeps/example.toml)."""
    from mlm.egg.sweep import run_sweep

    sys.exit(run_sweep(config, results, dry_run))


from mlm.egg.bench import bench_command  # noqa: E402
from mlm.egg.bench_mpi import bench_mpi_command  # noqa: E402

main.add_command(bench_command)
main.add_command(bench_mpi_command)


def run() -> None:
    """Entry point: user mistakes become one line on stderr and a non-zero exit, never a traceback."""
    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        click.echo(f"error: {exc.format_message()}; see --help for usage", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except MlmError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
