"""Kneser–Ney baselines: a hand-computed example, normalisation, ordering, the cache and the CLI."""

from __future__ import annotations

import json
import math
from collections import Counter
from fractions import Fraction as F
from pathlib import Path

import numpy as np
import pytest

from conftest import cli_env, headered_corpus, repetitive_corpus, run_cli
from mlm.data.corpus import load_corpus
from mlm.egg import baseline
from mlm.egg.baseline import KneserNey, baseline_bpb, cached_baselines, parse_orders
from mlm.errors import MlmError

TRAIN = b"cabcabcaca"
VAL = b"abdc"  # three predictions: b after a, d after b (d never seen), c after d (context never seen)


def as_array(text: bytes) -> np.ndarray:
    return np.frombuffer(text, dtype=np.uint8)


def bits(*probabilities: F) -> float:
    return -sum(math.log2(p) for p in probabilities) / len(probabilities)


def test_counts_written_below_are_the_training_strings() -> None:
    """Guards the hand-written counts of the next test against counting mistakes."""
    grams = lambda n: Counter(TRAIN[i : i + n] for i in range(len(TRAIN) - n + 1))  # noqa: E731
    assert grams(1) == {b"c": 4, b"a": 4, b"b": 2}
    assert grams(2) == {b"ca": 4, b"ab": 2, b"bc": 2, b"ac": 1}
    assert grams(3) == {b"cab": 2, b"abc": 2, b"bca": 2, b"cac": 1, b"aca": 1}


def test_matches_kneser_ney_by_hand() -> None:
    """p_j(w|h) = (max(c(hw) - D, 0) + D * N(h) * p_{j-1}(w|h')) / C(h), down to 1/256."""
    u = F(1, 256)

    # Order 0 on raw counts c: 4, a: 4, b: 2 (total 10, 3 types). No count is 1: D = 0.75.
    d = F(3, 4)
    p0 = {w: (max(c - d, 0) + d * 3 * u) / 10 for w, c in {"a": 4, "b": 2, "c": 4, "d": 0}.items()}
    expected0 = bits(p0["b"], p0["d"], p0["c"])

    # Order 1. Top level, raw bigrams: ca 4, ab 2, bc 2, ac 1 -> n1 = 1, n2 = 2, D1 = 1/(1+4).
    #   contexts: a -> {b: 2, c: 1} (C 3, N 2); b -> {c: 2} (C 2, N 1); c -> {a: 4}; d never seen.
    # Level 0, continuation counts (distinct bytes before each byte among the bigrams ca ab bc ac):
    #   a 1 (c), b 1 (a), c 2 (b, a) -> total 4, 3 types, n1 = 2, n2 = 1, D0 = 2/(2+2).
    d1, d0 = F(1, 5), F(1, 2)
    q0 = {w: (max(c - d0, 0) + d0 * 3 * u) / 4 for w, c in {"a": 1, "b": 1, "c": 2, "d": 0}.items()}
    b_after_a = (2 - d1 + d1 * 2 * q0["b"]) / 3
    d_after_b = (0 + d1 * 1 * q0["d"]) / 2
    c_after_d = q0["c"]  # context d unseen: back off entirely
    expected1 = bits(b_after_a, d_after_b, c_after_d)

    # Order 2. Top level, raw trigrams: cab 2, abc 2, bca 2, cac 1, aca 1 -> n1 = 2, n2 = 3, D2 = 2/(2+6).
    #   context ab -> {c: 2} (C 2, N 1); context bd never seen.
    # Level 1, continuation counts of bigrams over the distinct trigrams (suffixes ab bc ca ac ca):
    #   ca 2, ab 1, bc 1, ac 1 -> n1 = 3, n2 = 1, D1 = 3/(3+2); contexts a -> {b: 1, c: 1} (C 2, N 2),
    #   b -> {c: 1} (C 1, N 1), d never seen.
    # Level 0: the same continuation unigram counts as for order 1 (suffixes of ca ab bc ac).
    d2, d1 = F(1, 4), F(3, 5)
    b_after_a = (1 - d1 + d1 * 2 * q0["b"]) / 2  # first prediction: only one byte of context exists
    d_after_b = (0 + d1 * 1 * q0["d"]) / 1
    d_after_ab = (0 + d2 * 1 * d_after_b) / 2
    c_after_bd = q0["c"]  # neither bd nor d was seen as a context
    expected2 = bits(b_after_a, d_after_ab, c_after_bd)

    train, val = as_array(TRAIN), as_array(VAL)
    for order, expected in ((0, expected0), (1, expected1), (2, expected2)):
        assert KneserNey.fit(train, order).bits_per_byte(val) == pytest.approx(expected, abs=1e-9), order


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_distributions_sum_to_one(order: int) -> None:
    rng = np.random.default_rng(order)
    text = repetitive_corpus(200) + bytes(rng.integers(0, 256, 500).astype(np.uint8))
    model = KneserNey.fit(as_array(text), order)
    contexts = [bytes(rng.integers(0, 256, 4).astype(np.uint8)) for _ in range(5)] + [b"this.", b"x", b""]
    for context in contexts:
        p = model.distribution(context)
        assert p.shape == (256,) and (p > 0).all()
        assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_distribution_agrees_with_scoring() -> None:
    text = as_array(repetitive_corpus(100))
    model = KneserNey.fit(text, 3)
    val = as_array(b"const b = this.y; return a;")
    expected = [model.distribution(val[max(0, i - 3) : i].tobytes())[val[i]] for i in range(1, val.size)]
    np.testing.assert_allclose(model.probabilities(val), expected, rtol=1e-12)


def test_higher_orders_are_better_on_repetitive_text(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(repetitive_corpus(3000))
    bpb = baseline_bpb(load_corpus(path), [0, 1, 2, 3])
    assert bpb[0] > bpb[1] > bpb[2] > bpb[3] > 0


def test_cache_is_hit_the_second_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(repetitive_corpus(500))
    corpus = load_corpus(path)
    monkeypatch.setenv("MLM_CACHE_DIR", str(tmp_path / "cache"))
    computed: list[list[int]] = []

    def counting(corpus, orders):
        computed.append(list(orders))
        return baseline_bpb(corpus, orders)

    monkeypatch.setattr(baseline, "baseline_bpb", counting)
    first = cached_baselines(corpus, [0, 2])
    assert cached_baselines(corpus, [0, 2]) == first
    assert cached_baselines(corpus, [2, 1]) == {2: first[2], 1: pytest.approx(baseline_bpb(corpus, [1])[1])}
    assert computed == [[0, 2], [1]]
    assert (tmp_path / "cache" / "baselines.json").exists()


def test_cache_is_keyed_by_the_split_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same corpus bytes split by other rules must not reuse the cached figures."""
    corpus_file = tmp_path / "input.txt"
    corpus_file.write_bytes(headered_corpus())
    corpus = load_corpus(corpus_file)
    monkeypatch.setenv("MLM_CACHE_DIR", str(tmp_path / "cache"))
    cache_file = tmp_path / "cache" / "baselines.json"
    cached_baselines(corpus, [1])
    cache = json.loads(cache_file.read_text())
    (key,) = cache
    cache[key]["1"] = 99.0  # poison the entry: a hit returns it
    cache_file.write_text(json.dumps(cache))
    assert cached_baselines(corpus, [1]) == {1: 99.0}
    monkeypatch.setattr(baseline, "SPLIT_RULES", "other-rules")
    assert cached_baselines(corpus, [1]) == pytest.approx(baseline_bpb(corpus, [1]))


def test_unwritable_cache_still_computes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(repetitive_corpus(500))
    (tmp_path / "not-a-dir").write_text("x")
    monkeypatch.setenv("MLM_CACHE_DIR", str(tmp_path / "not-a-dir"))
    corpus = load_corpus(path)
    assert cached_baselines(corpus, [1]) == pytest.approx(baseline_bpb(corpus, [1]))


def test_cache_location_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert baseline.cache_path() == tmp_path / "mlm" / "baselines.json"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")
    assert baseline.cache_path() == Path.home() / ".cache" / "mlm" / "baselines.json"


@pytest.mark.parametrize("text", ["", "a,b", "0,9", "-1"])
def test_bad_orders_are_refused(text: str) -> None:
    with pytest.raises(MlmError, match="order"):
        parse_orders(text)


def test_cli_json(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_bytes(repetitive_corpus(2000))
    env = cli_env(MLM_CACHE_DIR=str(tmp_path / "cache"))
    result = run_cli("baseline", "--data", "c.txt", "--orders", "0,2", "--json", cwd=tmp_path, env=env, check=True)
    report = json.loads(result.stdout)
    assert report["data"] == "c.txt" and report["val_bytes"] == load_corpus(tmp_path / "c.txt").val_bytes
    assert set(report["orders"]) == {"0", "2"} and report["orders"]["0"] > report["orders"]["2"] > 0
    assert report["seconds"] >= 0
    text = run_cli("baseline", "--data", "c.txt", "--orders", "2", cwd=tmp_path, env=env, check=True).stdout.decode()
    assert text == f"order 2 (trigram) Kneser-Ney: {report['orders']['2']:.6f} bits/byte\n"
