#!/usr/bin/env python3
"""Plot val_bpb against wall-clock time from runs' training.log files, with baselines as lines.

    pip install ".[plot]"
    python scripts/plot_curves.py RUN_DIR [RUN_DIR ...] --out docs/curves.png [--baseline bigram=4.415 ...]

Also prints the same data as a Markdown table (minutes, val_bpb per run), for docs/results.md.
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime
from pathlib import Path

EVAL_LINE = re.compile(r"^(\S+ \S+) eval step (\d+) \| val_bpb ([0-9.]+)$")
START_LINE = re.compile(r"^(\S+ \S+) === start")


def curve(log: Path) -> list[tuple[float, float]]:
    """(minutes of training, val_bpb) for every evaluation; time restarts are stitched together."""
    points: list[tuple[float, float]] = []
    offset, session_start, last = 0.0, None, 0.0
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if match := START_LINE.match(line):
            offset, session_start = last, datetime.fromisoformat(match.group(1))
        elif (match := EVAL_LINE.match(line)) and session_start is not None:
            last = offset + (datetime.fromisoformat(match.group(1)) - session_start).total_seconds() / 60
            points.append((last, float(match.group(3))))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (each with training.log)")
    parser.add_argument("--out", type=Path, default=Path("docs/curves.png"))
    parser.add_argument("--baseline", action="append", default=[], metavar="NAME=BPB")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for run in args.runs:
        points = curve(run / "training.log")
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=run.name)
            print(f"\n| {run.name}: minutes | val_bpb |\n|---|---|")
            for minutes, bpb in points:
                print(f"| {minutes:.1f} | {bpb:.4f} |")
    for item in args.baseline:
        name, value = item.split("=")
        ax.axhline(float(value), linestyle="--", color="grey")
        ax.annotate(name, (0, float(value)), textcoords="offset points", xytext=(4, 3), color="grey")
    ax.set_xlabel("training time (minutes, 2 threads)")
    ax.set_ylabel("validation bits per byte")
    ax.grid(alpha=0.3)
    ax.legend()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120, bbox_inches="tight")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
