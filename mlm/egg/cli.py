"""The ``python -m mlm.egg`` command line: thin click wrappers over importable functions."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mlm import __version__
from mlm.click_types import SEED, FiniteFloatRange
from mlm.click_types import THREADS as THREADS_TYPE
from mlm.egg.cadence import PROGRESS_SECONDS, SAMPLE_SECONDS, SAVE_SECONDS
from mlm.egg.config import KNOBS, PRESETS, flag_of, from_flag_units, in_flag_units, preset
from mlm.egg.layout import VOCAB
from mlm.egg.schedule import DEFAULT_COOLDOWN
from mlm.errors import MlmError

if TYPE_CHECKING:
    from mlm.egg.train import TrainSettings

RUN_DIR = click.option("--run-dir", type=click.Path(path_type=Path), default=Path("egg-run"),
                       show_default=True, help="Run directory holding checkpoints and training.log.")
CKPT = click.option("--ckpt", default="latest", show_default=True,
                    help="Checkpoint: best, latest, a ring slot 0-9, or a file path.")


DEFAULT_TIME_BUDGET = 180.0


def default_threads() -> int:
    return os.cpu_count() or 1


THREADS = click.option("--threads", type=THREADS_TYPE, default=default_threads,
                       show_default="all cores", help="Worker threads, 1 to the number of cores "
                       "(results do not depend on it).")


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


def preset_values(field: str, scale: float = 1) -> str:
    """The presets' values of one configuration field, for --help: ``[presets: small 64, tiny 32, ...]``."""
    values = ", ".join(f"{name} {getattr(config, field) / scale:g}" for name, config in PRESETS.items())
    return f"[presets: {values}]"


def config_options(command: click.Command) -> click.Command:
    """A ``train`` flag for every configuration field that has one (``config.KNOBS``), in field order, its
    range that of the field and its help ending with the presets' values. The option's name is the field's."""
    for name, knob in reversed(KNOBS.items()):
        if knob.help:
            low, high = in_flag_units(name, knob.low), in_flag_units(name, knob.high)
            kind = click.IntRange(low, high) if knob.scale == 1 else FiniteFloatRange(low, high)
            command = click.option(flag_of(name), name, type=kind,
                                   help=f"{knob.help} {preset_values(name, knob.scale)}")(command)
    return command


#: Caps that keep a number within what the run can ever use (steps fit the checkpoint's int64 field).
MAX_STEPS = 2**63 - 1
POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)


@main.command()
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Training corpus [default: ./input.txt, else the bundled Three.js sample].")
@RUN_DIR
@click.option("--preset", "preset_name", type=click.Choice(list(PRESETS)), default="small", show_default=True,
              help="Model size and algorithm settings; flags below override it. Resuming, a --preset given "
                   "explicitly must match the checkpoint.")
@config_options
@click.option("--cooldown", type=FiniteFloatRange(0, 0.9), default=DEFAULT_COOLDOWN, show_default=True,
              help="Share of the run's steps over which the threshold rises so that weight moves fade out "
                   "(0: none). Fixed once: from --steps at the start, or under --time-budget shortly before "
                   "it begins, from the speed so far. 0.15 suits a run of known length (0.07 bits/byte lower "
                   "at 190,934 steps); a run trained past its cooldown barely moves, so leave it off for one "
                   "to extend.")
@THREADS
@click.option("--seed", type=SEED, default=None, help="Run seed, 0 to 2^64-1 [default: 1].")
@click.option("--steps", type=click.IntRange(1, MAX_STEPS), help="Stop after this many steps in total.")
@click.option("--time-budget", type=FiniteFloatRange(0, None, min_open=True),
              help=f"Stop after this many seconds of this invocation [default: {DEFAULT_TIME_BUDGET:.0f} "
                   "when --steps is not given].")
@click.option("--print-every", type=POSITIVE,
              help=f"Progress line every this many steps [default: every {PROGRESS_SECONDS:.0f} s]; a line "
                   f"also comes at least every {PROGRESS_SECONDS:.0f} s, and after the first step.")
@click.option("--sample-every", type=NON_NEGATIVE,
              help=f"Sample every this many steps, 0 for never [default: every {SAMPLE_SECONDS:.0f} s].")
@click.option("--save-every", type=POSITIVE,
              help="Checkpoint every this many steps [default: by time, see --save-seconds].")
@click.option("--save-seconds", type=FiniteFloatRange(0, None, min_open=True), default=SAVE_SECONDS,
              show_default=True,
              help="Without --save-every: checkpoint when this many seconds have passed since the last one; "
                   "also at every evaluation, at the end and on Ctrl-C/SIGTERM.")
@click.option("--eval-every", type=NON_NEGATIVE, default=0, show_default=True,
              help="Validation interval (0: off; best then follows training loss).")
@click.option("--eval-bytes", type=click.IntRange(2, None), default=65536, show_default=True,
              help="Validation bytes scored at each evaluation.")
@click.option("--resume", type=click.Choice(["auto", "best", "none"]), default="auto", show_default=True,
              help="auto: latest valid slot; best: egg.ckpt.best (also MLM_RESUME_BEST=1 or EGG_RESUME_BEST=1); "
                   "none: refuse existing checkpoints.")
@click.option("--fresh", is_flag=True, help="Move existing checkpoints to a dated subfolder and start over.")
@click.option("--allow-data-change", is_flag=True,
              help="Resume on a training file whose content differs from the checkpoint's (refused otherwise).")
@click.option("--results", type=click.Path(path_type=Path), default=Path("results.tsv"), show_default=True,
              help="Experiment table to append a row to.")
@click.option("--note", default="", help="Description for the results.tsv row.")
@click.option("--quiet", is_flag=True, help="Only errors on the terminal (training.log still gets everything).")
@click.option("--distributed", type=click.Choice(["auto", "off", "mpi"]), default="auto", show_default=True,
              help="Split each step's pairs across MPI processes (`mpiexec -n N python -m mlm.egg train`); "
                   "auto: when an MPI launcher started more than one (docs/distributed.md).")
@click.option("--mpi-update", type=click.Choice(["sliced", "replicated"]), default="sliced", show_default=True,
              help="With more than one MPI rank: each rank updates a fixed slice of the weights and the ranks "
                   "exchange the moves (sliced), or every rank applies the whole update (replicated). Same bits.")
@click.pass_context
def train(ctx: click.Context, **options) -> None:
    """Train a model with EGGROLL; re-run with the same --run-dir to resume exactly where it stopped."""
    from mlm.egg.train import train as run_training

    preset_given = ctx.get_parameter_source("preset_name") is not click.core.ParameterSource.DEFAULT
    sys.exit(run_training(train_settings(options, preset_given)))


def train_settings(options: dict, preset_given: bool) -> TrainSettings:
    """The settings of ``train`` from its parsed options; raises MlmError for a nonsensical combination.

    Everything that can be checked before training starts is checked here, so a mistake costs nothing.
    """
    from mlm.egg.train import TrainSettings

    o = dict(options)
    explicit = {name: from_flag_units(name, o[name]) for name, knob in KNOBS.items()
                if knob.help and o[name] is not None}
    steps, time_budget = o["steps"], o["time_budget"]
    if steps is None and time_budget is None:
        time_budget = DEFAULT_TIME_BUDGET
    config = preset(o["preset_name"]).overridden(**explicit).validate()
    return TrainSettings(
        config=config, run_dir=o["run_dir"], data=o["data"], explicit=explicit,
        preset_name=o["preset_name"] if preset_given else None, seed=1 if o["seed"] is None else o["seed"],
        seed_explicit=o["seed"] is not None, threads=o["threads"], steps=steps, time_budget=time_budget,
        cooldown=o["cooldown"], print_every=o["print_every"], sample_every=o["sample_every"],
        save_every=o["save_every"], save_seconds=o["save_seconds"], eval_every=o["eval_every"],
        eval_bytes=o["eval_bytes"], resume=o["resume"], fresh=o["fresh"],
        allow_data_change=o["allow_data_change"], results=o["results"], note=o["note"], quiet=o["quiet"],
        distributed=o["distributed"], mpi_update=o["mpi_update"],
    )


def argument_bytes(text: str) -> bytes:
    """The bytes the user typed: arguments that are not valid UTF-8 reach Python as surrogate escapes."""
    return text.encode("utf-8", "surrogateescape")


@main.command()
@CKPT
@RUN_DIR
@click.option("--prompt", default="", help="Text the sample continues.")
@click.option("--prompt-file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Read the prompt from a file.")
@click.option("--length", type=NON_NEGATIVE, default=400, show_default=True, help="Bytes to generate.")
@click.option("--temperature", type=FiniteFloatRange(0), default=0.8, show_default=True, help="0 = greedy.")
@click.option("--top-k", type=click.IntRange(0, VOCAB), default=0, show_default=True,
              help="Keep the k likeliest bytes (0: all).")
@click.option("--min-p", type=FiniteFloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Drop bytes less likely than min-p times the likeliest.")
@click.option("--presence-penalty", type=FiniteFloatRange(0), default=0.0, show_default=True,
              help="Bits subtracted from bytes already seen.")
@click.option("--stop", "stop_at", default=None, help="Stop after this string is generated.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Same seed, same text.")
@click.option("--raw", is_flag=True, help="Write raw bytes even to a terminal.")
def sample(ckpt, run_dir, prompt, prompt_file, length, temperature, top_k, min_p, presence_penalty, stop_at,
           seed, raw) -> None:
    """Generate text from a checkpoint, streamed to stdout."""
    from mlm.egg.engine import inference_engine
    from mlm.egg.layout import expected_sizes
    from mlm.egg.run_dir import RunDir
    from mlm.egg.sample import SamplingOptions, generate, printable

    checkpoint = RunDir(run_dir, expected_sizes).resolve(ckpt)
    engine = inference_engine(checkpoint.config, checkpoint.weights, checkpoint.state)
    prompt_bytes = prompt_file.read_bytes() if prompt_file else argument_bytes(prompt)
    options = SamplingOptions(temperature, top_k, min_p, presence_penalty, seed).validate()
    safe = sys.stdout.isatty() and not raw
    out = sys.stdout.buffer
    stop_bytes = argument_bytes(stop_at) if stop_at else None
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
@THREADS
@click.option("--results", type=click.Path(path_type=Path), default=Path("results.tsv"), show_default=True,
              help="Experiment table the evaluation appends its row to.")
@click.option("--note", default="", help="Description for the results.tsv row.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_command(ckpt, run_dir, data, max_bytes, breakdown, threads, results, note, as_json) -> None:
    """Validation bits per byte of a checkpoint (lower is better).

    The figure covers the whole validation split as harvested (every file the pinned split holds);
    --breakdown shows how it divides between files, so no single file can dominate it unseen.
    """
    from mlm.egg.evaluate import breakdown as score_parts
    from mlm.egg.evaluate import eval_bytes_of, evaluate
    from mlm.egg.layout import expected_sizes
    from mlm.egg.logbook import ResultRow, append_result, check_results_file, compact_config
    from mlm.egg.run_dir import RunDir

    check_results_file(results)
    checkpoint = RunDir(run_dir, expected_sizes).resolve(ckpt)
    run_data = checkpoint.extra.get("data_path")
    text = eval_bytes_of(data, Path(run_data) if run_data else None, max_bytes, checkpoint.extra.get("data_sha256"))
    if text.warning:
        click.echo(text.warning, err=True)
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
@click.option("--samples", type=POSITIVE, default=16, show_default=True,
              help="Samples per sampler; sample i continues prompt i mod the number of prompts with seed --seed + i.")
@click.option("--length", type=POSITIVE, default=256, show_default=True, help="Bytes generated per sample.")
@click.option("--temperature", type=FiniteFloatRange(0), default=0.5, show_default=True, help="0 = greedy.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Seed of the first sample.")
@click.option("--orders", default="0,1,2", show_default=True,
              help="Kneser-Ney baseline orders to compare with, comma-separated (0 unigram, 1 bigram, ...).")
@click.option("--accuracy-bytes", type=click.IntRange(2), default=None,
              help="Score top-1 accuracy on the first this many validation bytes [default: all].")
@THREADS
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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list, one object per file.")
def ckpt_list(run_dir, as_json) -> None:
    """Every ring slot and the best file: step, time, losses, validity."""
    from mlm.egg.layout import expected_sizes
    from mlm.egg.run_dir import RunDir

    infos = RunDir(run_dir, expected_sizes).scan()
    rows = [{"name": i.name, "exists": i.exists, "valid": i.valid, "reason": i.reason, "step": i.step,
             "created": i.created, "train_loss": i.train_loss, "val_bpb": i.val_bpb,
             "val_step": i.val_step, "best_metric": i.best_metric, "tracks": i.best_metric_name,
             "other_run": i.other_run} for i in infos]
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
        other = f"  ANOTHER RUN: {r['other_run']}; never resumed" if r["other_run"] else ""
        scored = f" (step {r['val_step']})" if r["val_step"] not in (None, r["step"]) else ""
        click.echo(f"{r['name']:14} step {r['step']:>7}  {when}  train_loss {format_metric(r['train_loss'])}  "
                   f"val_bpb {format_metric(r['val_bpb'])}{scored}  best {r['tracks']} "
                   f"{format_metric(r['best_metric'])}" + other)
    if not any(r["exists"] for r in rows):
        click.echo(f"no checkpoints in {run_dir}")


@ckpt.command(name="show")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def ckpt_show(path, as_json) -> None:
    """Configuration, step, metrics and the weights' sha256 of one checkpoint file."""
    from mlm.egg.checkpoint import read_checkpoint
    from mlm.egg.layout import expected_sizes

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
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def export(ckpt, run_dir, out, force) -> None:
    """Write the weights as named tensors to OUT (.safetensors or .npz), configuration in metadata.

    A run that keeps a weight average (--weight-average) exports the average, the weights it is
    evaluated and sampled with."""
    from mlm.egg.engine import inference_engine
    from mlm.egg.export import export_weights
    from mlm.egg.layout import expected_sizes, tensor_layout
    from mlm.egg.run_dir import RunDir

    if out.exists() and not force:
        raise MlmError(f"{out} already exists: add --force to replace it, or choose another file name")
    checkpoint = RunDir(run_dir, expected_sizes).resolve(ckpt)
    engine = inference_engine(checkpoint.config, checkpoint.weights, checkpoint.state)
    checkpoint = dataclasses.replace(checkpoint, weights=engine.weights.copy())
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
