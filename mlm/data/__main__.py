"""Command line for datasets: ``python -m mlm.data build --repo URL_OR_PATH --out input.txt``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mlm.data.harvest import (
    DEFAULT_INCLUDE,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_PATTERNS,
    BuildOptions,
    build_dataset,
)
from mlm.data.split import DEFAULT_VAL_FRACTION
from mlm.errors import MlmError


def _words(values: tuple[str, ...]) -> tuple[str, ...]:
    """Split each option value on whitespace, so ``--include "src examples/jsm"`` names two folders."""
    return tuple(word for value in values for word in value.split())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """Build training corpora for mlm."""


@cli.command()
@click.option("--repo", default=None, help="Git repository URL or local path.")
@click.option("--from-input", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Instead of --repo: take the files of an existing corpus (e.g. an unfiltered harvest).")
@click.option("--ref", default=None, help="Branch, tag or commit SHA (default: the remote's default branch).")
@click.option("--holdout-ref", default=None,
              help="A later release: files it adds go to <stem>.holdout.txt, a test of code written after --ref.")
@click.option("--keep-vendored", is_flag=True,
              help="Keep vendored (libs/, vendor/...), *.min.js, minified and generated files (skipped by default).")
@click.option(
    "--include",
    multiple=True,
    default=(" ".join(DEFAULT_INCLUDE),),
    show_default=True,
    help="Folders to harvest, space-separated; repeatable.",
)
@click.option(
    "--pattern",
    multiple=True,
    default=(" ".join(DEFAULT_PATTERNS),),
    show_default=True,
    help="File-name globs to keep, space-separated; repeatable.",
)
@click.option(
    "--exclude",
    multiple=True,
    help="Glob on the relative path (or a parent folder) to leave out; repeatable.",
)
@click.option(
    "--cache",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for the clone (default: .cache/<repository name>).",
)
@click.option(
    "--val-fraction",
    type=float,  # check_fraction says what is wrong with it, NaN included
    default=DEFAULT_VAL_FRACTION,
    show_default=True,
    help="Share of files held out for validation, chosen by a hash of the path.",
)
@click.option(
    "--max-file-bytes",
    type=click.IntRange(1),
    default=DEFAULT_MAX_FILE_BYTES,
    show_default=True,
    help="Skip files larger than this.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("input.txt"),
    show_default=True,
    help="Corpus to write; the manifest goes beside it as <stem>.manifest.json.",
)
def build(
    repo: str | None,
    from_input: Path | None,
    ref: str | None,
    holdout_ref: str | None,
    keep_vendored: bool,
    include: tuple[str, ...],
    pattern: tuple[str, ...],
    exclude: tuple[str, ...],
    cache: Path | None,
    val_fraction: float,
    max_file_bytes: int,
    out: Path,
) -> None:
    """Harvest a git repository (or an existing corpus) into one corpus file plus a manifest.

    By default vendored, minified and generated files are skipped (see mlm/data/hygiene.py for the
    rules and thresholds) and listed with their reason in the manifest; copies of a file stay on
    the same side of the validation split.
    """
    options = BuildOptions(
        repo=repo,
        out=out,
        ref=ref or None,
        keep_vendored=keep_vendored,
        holdout_ref=holdout_ref or None,
        from_input=from_input,
        include=_words(include),
        patterns=_words(pattern),
        exclude=_words(exclude),
        cache=cache,
        val_fraction=val_fraction,
        max_file_bytes=max_file_bytes,
    )
    try:
        result = build_dataset(options, log=lambda message: click.echo(message, err=True))
    except MlmError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    click.echo(result.summary)


if __name__ == "__main__":
    cli()
