"""Experiment records: the run directory's ``training.log`` and the ``results.tsv`` table.

``training.log`` is appended, timestamped, one line per event; it survives
restarts. ``results.tsv`` gets one row per train run (finished, interrupted or
crashed) and per eval, tagged with the git commit of the working repository,
and never rewrites earlier rows.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mlm.egg.config import KNOBS, ModelConfig
from mlm.errors import MlmError

LOG_NAME = "training.log"
RESULTS_COLUMNS = ("commit", "val_bpb", "train_loss", "memory_mb", "status", "steps", "seconds",
                   "pop_tok_per_s", "run_dir", "config", "description")


class TrainingLog:
    """Appends timestamped lines to ``<run_dir>/training.log``."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOG_NAME

    def write(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        lines = message.rstrip("\n").split("\n")
        try:
            with open(self.path, "a", encoding="utf-8") as log:
                log.write("".join(f"{stamp} {line}\n" for line in lines))
        except OSError as error:
            print(f"warning: cannot append to {self.path}: {error.strerror}", file=sys.stderr)


def git_commit(cwd: Path | None = None) -> str:
    """Short SHA of the repository containing ``cwd``, ``+dirty`` when tracked files changed, else ``-``."""
    try:
        os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
        import git

        repo = git.Repo(cwd or Path.cwd(), search_parent_directories=True)
        sha = repo.git.rev_parse("--short", "HEAD")
        return sha + ("+dirty" if repo.is_dirty(untracked_files=False) else "")
    except Exception:  # no git, not a repository, no commit yet: all mean "no code version"
        return "-"


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def compact_config(config: ModelConfig, seed: int) -> str:
    """The configuration as one short, greppable field: every ModelConfig field by its tag (config.KNOBS),
    so rows that differ in any setting (a sweep's) never look alike."""
    values = "_".join(f"{knob.tag}{getattr(config, name)}" for name, knob in KNOBS.items())
    return f"{values}_seed{seed}"


def safe_field(text: str) -> str:
    """Tabs and newlines would break the TSV: make them spaces."""
    return " ".join(text.replace("\t", " ").splitlines()).strip()


@dataclass
class ResultRow:
    val_bpb: float | None
    train_loss: float | None
    status: str
    steps: int
    seconds: float
    pop_tok_per_s: float
    run_dir: str
    config: str
    description: str = ""

    def fields(self, commit: str, memory_mb: float) -> list[str]:
        def num(value: float | None, digits: int) -> str:
            return "-" if value is None else f"{value:.{digits}f}"

        return [commit, num(self.val_bpb, 6), num(self.train_loss, 6), f"{memory_mb:.1f}", self.status,
                str(self.steps), f"{self.seconds:.1f}", f"{self.pop_tok_per_s:.0f}", safe_field(self.run_dir),
                safe_field(self.config), safe_field(self.description)]


def check_results_file(path: Path) -> None:
    """Refuse a results file whose header is not ours, before any work is done."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\n").split("\t")
    if tuple(header) != RESULTS_COLUMNS:
        raise MlmError(f"{path} exists with a different header (not an mlm results file): "
                       "pass another --results path or move it away")


def append_result(path: Path, row: ResultRow) -> None:
    """Append one row (and the header when the file is new); never rewrites earlier rows."""
    check_results_file(path)
    new = not path.exists() or path.stat().st_size == 0
    line = "\t".join(row.fields(git_commit(), peak_rss_mb())) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:
            if new:
                f.write("\t".join(RESULTS_COLUMNS) + "\n")
            f.write(line)
    except OSError as error:
        raise MlmError(f"cannot append to {path}: {error.strerror}; pass another --results path") from None
