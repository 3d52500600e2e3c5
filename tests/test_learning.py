"""It must learn: the tiny preset on a highly regular corpus beats every context-free model."""

from __future__ import annotations

import json

import numpy as np

from conftest import repetitive_corpus, run_cli


def unigram_entropy(data: bytes) -> float:
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def test_tiny_preset_learns_a_regular_corpus(tmp_path) -> None:
    """Start near 8 bits/byte (uniform); end well below the unigram entropy (about 4.4 bits/byte).

    The unigram entropy is the best loss any model that ignores context can reach, so ending
    1.5 bits below it proves the model learned to use the bytes before each prediction.
    """
    data = repetitive_corpus()
    (tmp_path / "input.txt").write_bytes(data)
    run_cli("train", "--preset", "tiny", "--steps", "1000", "--print-every", "5", "--sample-every", "0",
            "--threads", "2", "--run-dir", "R", cwd=tmp_path, check=True, timeout=120)
    losses = [float(line.split("loss ")[1].split(" ")[0])
              for line in (tmp_path / "R" / "training.log").read_text().splitlines() if "| loss " in line]
    assert losses[0] > 7.0, f"an untrained model should be near 8 bits/byte, got {losses[0]}"
    floor = unigram_entropy(data)
    assert losses[-1] < floor - 1.5, f"final loss {losses[-1]:.3f} not below unigram entropy {floor:.3f} - 1.5"
    shown = json.loads(run_cli("ckpt", "show", "R/egg.ckpt.best", "--json", cwd=tmp_path, check=True).stdout)
    assert shown["metrics"]["best_metric"] < floor - 1.5
