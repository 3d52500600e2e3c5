"""The threshold cooldown is fixed once per run, from --steps or from the measured speed, and stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import headered_corpus, run_cli
from mlm.egg.config import ModelConfig
from mlm.egg.schedule import COOLDOWN_LEAD, StepEstimate, calibrated, with_cooldown

TRAIN = ("train", "--preset", "tiny", "--print-every", "5", "--sample-every", "0")


def stored_config(cwd: Path, run_dir: str) -> dict:
    shown = run_cli("ckpt", "show", f"{run_dir}/egg.ckpt.best", "--json", cwd=cwd, check=True).stdout
    return json.loads(shown)["config"]


@pytest.fixture
def corpus_dir(workdir: Path) -> Path:
    (workdir / "input.txt").write_bytes(headered_corpus())
    return workdir


def test_with_cooldown_takes_the_last_share_of_the_steps() -> None:
    config = ModelConfig()
    cooled = with_cooldown(config, 1000, 0.2)
    assert (cooled.cooldown_start, cooled.cooldown_end) == (800, 1000)
    assert with_cooldown(config, 1000, 0.0) == config
    assert (with_cooldown(config, 3, 0.9).cooldown_start, with_cooldown(config, 3, 0.9).cooldown_end) == (1, 3)
    assert with_cooldown(config, 1, 0.5) == config, "a one-step run has nothing to cool down"


def test_speed_estimate_comes_shortly_before_the_cooldown_and_after_enough_steps() -> None:
    assert not calibrated(5, 900.0, 1000.0, 0.15)
    assert not calibrated(100, 790.0, 1000.0, 0.15)
    assert calibrated(100, 800.0, 1000.0, 0.15), "5% of the budget before the last 15% begins"
    assert calibrated(100, 50.0, 1000.0, 0.9) and not calibrated(100, 49.0, 1000.0, 0.9)
    assert StepEstimate(steps_done=100, seconds=30.0, first_step=50).total_steps(1000.0) == 50 + 3333


def test_steps_run_stores_its_cooldown(corpus_dir: Path) -> None:
    run_cli(*TRAIN, "--steps", "20", "--cooldown", "0.25", "--run-dir", "A", cwd=corpus_dir, check=True)
    config = stored_config(corpus_dir, "A")
    assert (config["cooldown_start"], config["cooldown_end"]) == (15, 20)
    run_cli(*TRAIN, "--steps", "20", "--cooldown", "0", "--run-dir", "B", cwd=corpus_dir, check=True)
    assert (stored_config(corpus_dir, "B")["cooldown_end"]) == 0
    run_cli(*TRAIN, "--steps", "20", "--run-dir", "G", cwd=corpus_dir, check=True)
    assert (stored_config(corpus_dir, "G")["cooldown_end"]) == 0, "no cooldown unless asked for"


def test_cooldown_changes_training_only_inside_its_window(corpus_dir: Path) -> None:
    """Before the window the runs agree step for step; inside it the raised threshold moves fewer weights."""
    def moved(run_dir: str, cooldown: str) -> dict[int, int]:
        run_cli(*TRAIN, "--steps", "20", "--print-every", "1", "--cooldown", cooldown, "--max-z", "100",
                "--run-dir", run_dir, cwd=corpus_dir, check=True)
        lines = (corpus_dir / run_dir / "training.log").read_text().splitlines()
        return {int(line.split("step ")[1].split(" ")[0]): int(line.rsplit("moved ", 1)[1])
                for line in lines if "| moved " in line}

    cooled, plain = moved("C", "0.5"), moved("D", "0")
    assert [cooled[s] for s in range(1, 11)] == [plain[s] for s in range(1, 11)]
    assert sum(cooled[s] for s in range(12, 21)) < sum(plain[s] for s in range(12, 21))


def test_time_budget_run_fixes_its_cooldown_once(corpus_dir: Path) -> None:
    run_cli(*TRAIN, "--time-budget", "4", "--cooldown", "0.2", "--run-dir", "E", cwd=corpus_dir, check=True)
    log = (corpus_dir / "E" / "training.log").read_text()
    assert log.count("cooldown fixed at steps") == 1
    timed = float(log.split("cooldown fixed at steps")[1].split(" steps in ")[1].split(" s")[0])
    assert timed >= (1 - 0.2 - COOLDOWN_LEAD) * 4, "fixed from the speed of the steps before the cooldown"
    first = stored_config(corpus_dir, "E")
    assert 0 < first["cooldown_start"] < first["cooldown_end"]
    run_cli(*TRAIN, "--time-budget", "2", "--cooldown", "0.2", "--run-dir", "E", cwd=corpus_dir, check=True)
    assert (corpus_dir / "E" / "training.log").read_text().count("cooldown fixed at steps") == 1
    again = stored_config(corpus_dir, "E")
    assert (again["cooldown_start"], again["cooldown_end"]) == (first["cooldown_start"], first["cooldown_end"])


def test_training_past_the_cooldown_says_so(corpus_dir: Path) -> None:
    run_cli(*TRAIN, "--steps", "10", "--cooldown", "0.2", "--run-dir", "F", cwd=corpus_dir, check=True)
    run_cli(*TRAIN, "--steps", "15", "--run-dir", "F", cwd=corpus_dir, check=True)
    assert "cooled down for its end at step 10" in (corpus_dir / "F" / "training.log").read_text()
