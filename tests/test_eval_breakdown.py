"""``eval --breakdown``: bits per category, folder and file add up to the one val_bpb."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REPETITIVE_LINES, run_cli
from mlm.egg.engine import inference_engine
from mlm.egg.evaluate import EVAL_CHUNK, LOSS_SCALE
from mlm.egg.run_dir import RunDir
from mlm.egg.train import expected_sizes

FILES = {
    "src/math/a.js": b"".join(REPETITIVE_LINES * 30),
    "src/core/b.js": b"".join(REPETITIVE_LINES[::-1] * 20),
    "examples/jsm/libs/vendor.js": bytes(range(32, 127)) * 40,
    "examples/jsm/utils/blob.js": b"var a=function(b){return b+1};" * 60,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for a few steps, and a headered text of four kinds of file to score."""
    root = tmp_path_factory.mktemp("breakdown")
    sections = (b"// === FILE: %s ===\n%s\n" % (path.encode(), data) for path, data in FILES.items())
    (root / "scored.txt").write_bytes(b"".join(sections))
    run_cli("train", "--data", "scored.txt", "--preset", "tiny", "--steps", "20", "--print-every", "10",
            "--sample-every", "0", "--threads", "1", cwd=root, check=True)
    return root


def test_breakdown_adds_up_and_names_each_kind_of_file(trained: Path) -> None:
    plain = run_cli("eval", "--data", "scored.txt", "--json", cwd=trained, check=True)
    done = run_cli("eval", "--data", "scored.txt", "--breakdown", "--json", "--threads", "2", cwd=trained,
                   check=True)
    report, plain_report = json.loads(done.stdout), json.loads(plain.stdout)
    assert report["val_bpb"] == plain_report["val_bpb"]  # per-prediction path = the summed path
    parts = report["breakdown"]
    predicted = report["bytes"] - 1
    for group in ("categories", "folders"):
        assert sum(p["bytes"] for p in parts[group]) == predicted
        bits = sum(p["bits_per_byte"] * p["bytes"] for p in parts[group])
        assert bits == pytest.approx(report["val_bpb"] * predicted, rel=1e-9)
        assert sum(p["share_of_bits"] for p in parts[group]) == pytest.approx(1.0)
    assert {p["name"] for p in parts["categories"]} == {"hand-written", "vendored", "minified"}
    assert {p["name"] for p in parts["folders"]} == {"src/math", "src/core", "examples/jsm"}
    top = parts["top_files"]
    assert {p["name"] for p in top} == set(FILES)
    shares = [p["share_of_bits"] for p in top]
    assert shares == sorted(shares, reverse=True)
    assert 0.0 <= parts["top1_accuracy"] <= 1.0


def test_file_bits_equal_the_predictions_of_its_bytes(trained: Path) -> None:
    """Independent check in-process: a file's bits are the losses of the predictions of its own bytes."""
    done = run_cli("eval", "--data", "scored.txt", "--breakdown", "--json", cwd=trained, check=True)
    top = {p["name"]: p for p in json.loads(done.stdout)["breakdown"]["top_files"]}
    raw = (trained / "scored.txt").read_bytes()
    ckpt = RunDir(trained / "egg-run", expected_sizes).resolve("latest")
    engine = inference_engine(ckpt.config, ckpt.weights, ckpt.state)  # the weight average, as eval uses
    losses, argmax = engine.eval_detail(raw, EVAL_CHUNK)
    tokens = np.frombuffer(raw, dtype=np.uint8)
    path = "examples/jsm/utils/blob.js"
    start = raw.index(b"// === FILE: " + path.encode())
    stop = start + len(b"// === FILE: %s ===\n" % path.encode()) + len(FILES[path]) + 1
    assert top[path]["bytes"] == stop - start
    assert top[path]["bits_per_byte"] == pytest.approx(losses[start - 1 : stop - 1].sum() / LOSS_SCALE / (stop - start))
    accuracy = json.loads(done.stdout)["breakdown"]["top1_accuracy"]
    assert accuracy == pytest.approx(float(np.mean(argmax == tokens[1:])))


def test_breakdown_of_the_validation_split_and_plain_text(trained: Path) -> None:
    (trained / "plain.txt").write_bytes(b"".join(REPETITIVE_LINES * 60))
    done = run_cli("eval", "--data", "plain.txt", "--breakdown", cwd=trained, check=True)
    assert b"(no file)" in done.stdout and b"top-1 next-byte accuracy" in done.stdout
    done = run_cli("eval", "--breakdown", "--json", cwd=trained, check=True)  # the run's validation split
    val_files = {p["name"] for p in json.loads(done.stdout)["breakdown"]["top_files"]}
    assert val_files and val_files < set(FILES)
    done = run_cli("eval", "--breakdown", "--max-bytes", "100", cwd=trained)
    assert done.returncode != 0 and b"fewer than one evaluation window" in done.stderr
