"""The weight average end to end: training keeps it, and eval, sample and export use it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import run_cli
from mlm.egg.checkpoint import read_checkpoint
from mlm.egg.engine import Engine
from mlm.egg.evaluate import EVAL_CHUNK, bits_per_byte
from mlm.egg.layout import expected_sizes


def test_eval_sample_and_export_use_the_average_and_training_does_not(workdir: Path) -> None:
    run_cli("train", "--preset", "tiny", "--steps", "40", "--weight-average", "1", "--eval-every", "40",
            "--sample-every", "0", "--run-dir", "R", cwd=workdir, check=True)
    ckpt = read_checkpoint(workdir / "R" / "egg.ckpt.0", expected_sizes)
    assert ckpt.step == 40 and ckpt.config.weight_average == 1
    engine = Engine(ckpt.config)
    engine.weights[:] = ckpt.weights
    engine.load_training_state(ckpt.state)
    averaged = engine.averaged_weights()
    assert np.count_nonzero(averaged != ckpt.weights) > 100, "the average must differ from the last weights"

    run_cli("export", "--run-dir", "R", "--ckpt", "0", "w.npz", cwd=workdir, check=True)
    with np.load(workdir / "w.npz") as npz:
        exported = np.concatenate([npz[t.name].reshape(-1) for t in sorted(engine.tensors(), key=lambda t: t.offset)])
    assert np.array_equal(exported, averaged)

    shown = json.loads(run_cli("eval", "--run-dir", "R", "--ckpt", "0", "--json", "--results", "r.tsv",
                               cwd=workdir, check=True).stdout)
    from mlm.data.corpus import load_corpus

    val = load_corpus(workdir / "input.txt").val
    with engine.averaged():
        expected = bits_per_byte(engine.eval_bits(val, EVAL_CHUNK), val.size)
    raw = bits_per_byte(engine.eval_bits(val, EVAL_CHUNK), val.size)
    assert expected != raw
    assert shown["val_bpb"] == round(expected, 4) or abs(shown["val_bpb"] - expected) < 5e-5
    assert f"val_bpb {expected:.4f}" in (workdir / "R" / "training.log").read_text(), \
        "training evaluates the average too"

    sampled = run_cli("sample", "--run-dir", "R", "--ckpt", "0", "--length", "60", "--seed", "3", "--raw",
                      cwd=workdir, check=True).stdout
    plain = Engine(ckpt.config)
    plain.weights[:] = ckpt.weights
    from mlm.egg.sample import SamplingOptions, generate

    with engine.averaged():
        from_average = bytes(generate(engine, b"", 60, SamplingOptions(seed=3)))
    assert from_average != bytes(generate(plain, b"", 60, SamplingOptions(seed=3)))
    assert from_average in sampled
