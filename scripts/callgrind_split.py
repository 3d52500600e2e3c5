#!/usr/bin/env python3
"""Split a callgrind profile of training steps into GEMM and everything else, per population-token.

    valgrind --tool=callgrind --toggle-collect=egg_train_step --callgrind-out-file=step.cg \
        python scripts/step_workload.py --preset small --steps 2 --warmup 0 --threads 1
    python scripts/callgrind_split.py step.cg --pop-tokens 32768   # 2 steps x 256 members x 64 tokens

Instructions are summed by function (callgrind_annotate's self cost, inlined code counted where it
was inlined); functions named gemm_* are the GEMM (the forward's and the update's vote GEMM), the
rest of egg_train_step is "non-GEMM". Instruction counts are deterministic: the same build and
workload give the same numbers on a loaded machine.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from collections import Counter

ROW = re.compile(r"^\s*([\d,]+)\s+(?:\([\s\d.%]+\)\s+)?(\S+):(\S+)")


def function_costs(path: str) -> Counter:
    """Self instruction counts by function name, summed over the source files callgrind names."""
    text = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", path], capture_output=True,
                          text=True, check=True).stdout
    costs: Counter = Counter()
    for line in text.splitlines():
        match = ROW.match(line)
        if match and "PROGRAM TOTALS" not in line:
            costs[match.group(3).split("'")[0]] += int(match.group(1).replace(",", ""))
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile")
    parser.add_argument("--pop-tokens", type=int, required=True, help="steps x population x seq_len profiled")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    costs = function_costs(args.profile)
    total = sum(costs.values())
    gemm = sum(v for k, v in costs.items() if k.startswith("gemm_"))
    per = args.pop_tokens
    print(f"{'instructions per population-token':40}{'':>10}")
    print(f"{'whole step':40}{total / per:10,.0f}")
    print(f"{'GEMM (gemm_*)':40}{gemm / per:10,.0f}")
    print(f"{'non-GEMM':40}{(total - gemm) / per:10,.0f}")
    print("by function:")
    for name, value in costs.most_common(args.top):
        print(f"  {name:38}{value / per:10,.0f}")


if __name__ == "__main__":
    main()
