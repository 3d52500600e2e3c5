"""Sweeps: configuration checking, planning and resuming, and a real two-run sweep."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli
from mlm.egg.logbook import ResultRow, append_result
from mlm.egg.sweep import load_sweep, plan, read_results
from mlm.errors import MlmError

REPO = Path(__file__).resolve().parents[1]

TWO_RUNS = """
budget_seconds = 2
eval_every = 5
run_root = "runs"
threads = 1
[base]
preset = "tiny"
sample_every = 0
[grid]
seed = [1, 2]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_two_runs_then_everything_is_skipped(workdir: Path) -> None:
    write(workdir, TWO_RUNS)
    first = run_cli("sweep", "sweep.toml", "--results", "r.tsv", cwd=workdir, check=True).stdout.decode()
    rows = read_results(workdir / "r.tsv")
    assert [row["description"] for row in rows] == ["sweep:seed=1", "sweep:seed=2"]
    assert [row["run_dir"] for row in rows] == ["runs/seed=1", "runs/seed=2"]
    for row in rows:
        assert row["status"] == "ok" and 0 < float(row["val_bpb"]) < 20 and int(row["steps"]) > 0
    table = first.splitlines()[-3:]
    assert table[0].split() == ["val_bpb", "train_loss", "steps", "status", "run"]
    assert [float(line.split()[0]) for line in table[1:]] == sorted(float(row["val_bpb"]) for row in rows)

    again = run_cli("sweep", "sweep.toml", "--results", "r.tsv", cwd=workdir, check=True).stdout.decode()
    assert "skip seed=1 (done)" in again and "skip seed=2 (done)" in again
    assert len(read_results(workdir / "r.tsv")) == 2


def test_interrupted_runs_start_over_fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sweep = load_sweep(write(tmp_path, TWO_RUNS.replace("[1, 2]", "[1, 2, 3]")))
    results = tmp_path / "r.tsv"
    for seed, status in ((1, "ok"), (2, "interrupted")):
        append_result(results, ResultRow(val_bpb=3.0, train_loss=3.0, status=status, steps=9, seconds=2.0,
                                         pop_tok_per_s=1.0, run_dir=f"runs/seed={seed}", config="-",
                                         description=f"sweep:seed={seed}"))
        (tmp_path / "runs" / f"seed={seed}").mkdir(parents=True)
    done, interrupted, new = plan(sweep, results)
    assert done.done and not interrupted.done and not new.done
    assert "--fresh" in interrupted.command and "--fresh" not in new.command
    assert new.command[new.command.index("--note") + 1] == "sweep:seed=3"
    assert new.command[-6:] == ["--preset", "tiny", "--sample-every", "0", "--seed", "3"]


def test_names_and_overrides(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path, """
budget_seconds = 1.5
[base]
preset = "small"
hidden = 64
[grid]
population = [128, 256]
threshold_z = [2.5]
[[runs]]
name = "wide"
hidden = 256
[[runs]]
seq_len = 32
"""))
    assert sweep.budget_seconds == 1.5 and sweep.eval_every == 50 and sweep.run_root == Path("sweep-runs")
    assert [run.name for run in sweep.runs] == ["population=128,threshold_z=2.5", "population=256,threshold_z=2.5",
                                                "wide", "seq_len=32"]
    assert sweep.runs[2].options == {"preset": "small", "hidden": 256}
    assert sweep.runs[3].options == {"preset": "small", "hidden": 64, "seq_len": 32}


def test_example_config_is_valid() -> None:
    sweep = load_sweep(REPO / "sweeps" / "example.toml")
    assert len(sweep.runs) == 5 and sweep.runs[-1].name == "wide"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("budget_seconds = 1\nbudget = 2\n[grid]\nseed = [1]\n", "unknown key budget"),
        ("budget_seconds = 1\n[grid]\n", "[grid] is empty"),
        ("budget_seconds = 1\n[grid]\nseed = []\n", "grid.seed must be a non-empty list"),
        ("budget_seconds = 1\n[base]\npreset = 'tiny'\n", "defines no runs"),
        ("[grid]\nseed = [1]\n", "budget_seconds is missing"),
        ("budget_seconds = 0\n[grid]\nseed = [1]\n", "budget_seconds must be a positive number"),
        ("budget_seconds = 1\n[grid]\nsteps = [1]\n", "grid.steps is not a train option"),
        ("budget_seconds = 1\n[grid]\npopulation = ['many']\n", "grid.population = 'many'"),
        ("budget_seconds = 1\n[base]\npreset = 'huge'\n[grid]\nseed = [1]\n", "base.preset = 'huge'"),
        ("budget_seconds = 1\n[[runs]]\nname = 'a/b'\n", "usable as a directory name"),
        ("budget_seconds = 1\n[[runs]]\nname = 'x'\n[[runs]]\nname = 'x'\n", "several runs are named x"),
    ],
)
def test_bad_configs_are_one_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(MlmError) as error:
        load_sweep(write(tmp_path, text))
    assert needle in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(("text", "needle"), [("budget_seconds = = 1\n", "not valid TOML"), (None, "does not exist")])
def test_cli_bad_config_is_one_line(tmp_path: Path, text: str | None, needle: str) -> None:
    if text is not None:
        write(tmp_path, text)
    result = run_cli("sweep", "sweep.toml", cwd=tmp_path)
    err = result.stderr.decode()
    assert result.returncode != 0 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "results.tsv").exists()


def test_dry_run_runs_nothing(workdir: Path) -> None:
    write(workdir, TWO_RUNS)
    out = run_cli("sweep", "sweep.toml", "--dry-run", cwd=workdir, check=True).stdout.decode()
    assert "[1/2] seed=1:" in out and "--time-budget 2.0" in out and "[2/2] seed=2:" in out
    assert not (workdir / "results.tsv").exists() and not (workdir / "runs").exists()
