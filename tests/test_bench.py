"""The bench command: runs briefly on a tiny preset and reports what docs/performance.md promises."""

from __future__ import annotations

import json
import math
from pathlib import Path

from conftest import cli_env, run_cli
from mlm.egg.bench import macs_per_pop_token, run_bench, step_memory_bytes
from mlm.egg.config import PRESETS, ModelConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ("pop_tok_per_s", "speedup_vs_member", "achieved_gmacs", "peak_gmacs", "fraction_of_peak",
            "peak_rss_mb", "kernel", "threads", "update_fraction", "gemm_fraction_of_peak")


def bench(*args: str, cwd: Path) -> str:
    """``python -m mlm.egg bench ARGS`` with this checkout importable; its stdout."""
    env = cli_env(PYTHONPATH=str(REPO_ROOT))
    return run_cli("bench", "--preset", "tiny", *args, cwd=cwd, env=env, check=True).stdout.decode()


def test_bench_json_has_the_required_keys(tmp_path) -> None:
    report = json.loads(bench("--seconds", "0.5", "--threads", "2", "--json", cwd=tmp_path))
    assert set(REQUIRED) <= set(report)
    assert report["threads"] == 2
    for key in REQUIRED:
        if key not in ("kernel", "threads"):
            assert isinstance(report[key], float) and math.isfinite(report[key]) and report[key] > 0, key
    assert 0 < report["update_fraction"] < 1
    rate = report["pop_tok_per_s"]
    assert math.isclose(report["achieved_gmacs"], rate * report["macs_per_pop_token"] / 1e9)
    assert math.isclose(report["speedup_vs_member"], rate / report["member_pop_tok_per_s"])


def test_bench_report_and_single_schedules(tmp_path) -> None:
    text = bench("--seconds", "0.2", "--schedule", "batched", cwd=tmp_path)
    assert "pop-tokens/s" in text and "of peak" in text and "member" not in text
    member = run_bench("tiny", 0.2, 1, "member")
    assert member["speedup_vs_member"] is None
    assert member["pop_tok_per_s"] == member["member_pop_tok_per_s"]


def test_member_schedule_shortens_long_sequences() -> None:
    """A budget too short for one whole member step runs fewer tokens and says so."""
    name = next(n for n, c in PRESETS.items() if c.hidden >= 128)
    report = run_bench(name, 0.05, 1, "member")
    assert report["member_seq_len"] < report["seq_len"]
    assert "normalised" in report["member_note"]


def test_work_and_memory_formulas() -> None:
    ref = PRESETS["reference"]
    h, m = ref.hidden, ref.mlp_hidden
    matrices, rank1 = 4 * (4 * h * h + 2 * h * m) + 256 * h, 4 * (8 * h + 2 * (h + m)) + 256 + h
    assert macs_per_pop_token(ref) == matrices + rank1
    assert macs_per_pop_token(ref) == 12_751_616
    small = ModelConfig(hidden=16, layers=1, mlp_ratio=1, seq_len=1, population=2, streams=1)
    assert step_memory_bytes(small, 1) > 0
    assert step_memory_bytes(ref, 2) > 13_000_000  # at least the weights


def test_bench_overrides_non_gemm_time_and_thread_efficiency(tmp_path) -> None:
    """--hidden/--layers/--mlp-ratio/--seq-len/--population replace the preset's sizes; the step's time per
    population-token splits into the GEMM alone and the rest; 2 threads are compared with 1."""
    report = json.loads(bench("--hidden", "48", "--layers", "2", "--mlp-ratio", "3", "--seq-len", "5",
                              "--population", "12", "--seconds", "0.3", "--threads", "2", "--schedule", "batched",
                              "--thread-scaling", "--json", cwd=tmp_path))
    cfg = PRESETS["tiny"].replace(hidden=48, layers=2, mlp_ratio=3, seq_len=5, population=12, streams=6)
    assert (report["hidden"], report["layers"], report["mlp_ratio"], report["seq_len"], report["population"]) == (
        48, 2, 3, 5, 12)
    assert report["macs_per_pop_token"] == macs_per_pop_token(cfg)
    assert math.isclose(report["step_ns_per_pop_token"], 1e9 / report["pop_tok_per_s"])
    gemm_macs = 2 * (4 * 48 * 48 + 2 * 48 * 144) + 256 * 48
    assert math.isclose(report["gemm_ns_per_pop_token"], 1e9 * gemm_macs / (report["gemm_gmacs"] * 1e9))
    assert math.isclose(report["non_gemm_ns_per_pop_token"],
                        report["step_ns_per_pop_token"] - report["gemm_ns_per_pop_token"])
    assert report["one_thread_pop_tok_per_s"] > 0
    assert math.isclose(report["thread_efficiency"], report["pop_tok_per_s"] / (2 * report["one_thread_pop_tok_per_s"]))
    one = run_bench("tiny", 0.1, 1, "batched", {"population": 4}, thread_scaling=True)
    assert "thread_efficiency" not in one and one["population"] == 4  # one thread: nothing to compare
    assert "thread_efficiency" not in run_bench("tiny", 0.1, 2, "batched")  # not asked for


def test_bench_refuses_a_bad_override(tmp_path) -> None:
    result = run_cli("bench", "--preset", "tiny", "--hidden", "50", "--seconds", "0.1", cwd=tmp_path,
                     env=cli_env(PYTHONPATH=str(REPO_ROOT)))
    assert result.returncode != 0
    err = result.stderr.decode()
    assert "--hidden must be a positive multiple of 16 (got 50)" in err and "Traceback" not in err
