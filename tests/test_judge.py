"""``judge``: its metrics on hand-written samples, the Kneser–Ney argmax and sampler, and the command end to end."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import cli_env, headered_corpus, repetitive_corpus, run_cli
from mlm.egg.baseline import KneserNey
from mlm.egg.checkpoint import read_checkpoint, write_checkpoint
from mlm.egg.judge import (
    DEFAULT_PROMPTS,
    JudgeSettings,
    Vocabulary,
    bracket_balance,
    choose_byte,
    exported_names,
    kn_argmax,
    kn_generate,
    kn_predictions,
    mean_or_none,
    parse_prompts,
    sample_metrics,
    syntax_stats,
    top1_accuracy,
    training_words,
)
from mlm.egg.sample import SamplingOptions, next_byte_probabilities
from mlm.errors import MlmError

VOCABULARY = Vocabulary.of(b"export class Vector3 {}\nexport { add, sub as subtract };\nconst scale = 2;\n")


def as_array(text: bytes) -> np.ndarray:
    return np.frombuffer(text, dtype=np.uint8)


def test_valid_javascript_scores_clean() -> None:
    prompt, continuation = b"function add( a, b ) {\n\n\t", b"return a + b;\n\n}\n"
    metrics = sample_metrics(prompt, continuation, VOCABULARY)
    assert metrics.parse_error_share == 0.0
    assert metrics.missing_per_kb == 0.0
    assert metrics.unmatched_closers_per_kb == 0.0
    assert metrics.unclosed_at_end == 0
    # Only the continuation's identifiers count: a and b, not the prompt's add.
    assert sorted(syntax_stats(prompt, continuation).identifiers) == ["a", "b"]
    assert metrics.known_identifier_share == 0.0  # a and b are not words of VOCABULARY's text


def test_missing_brace_is_missing_or_error_and_left_open() -> None:
    prompt, continuation = b"function f( a ) {\n", b"\treturn a + 1;\n"
    syntax = syntax_stats(prompt, continuation)
    assert syntax.missing_nodes + syntax.error_bytes > 0
    metrics = sample_metrics(prompt, continuation, VOCABULARY)
    assert metrics.missing_per_kb == syntax.missing_nodes * 1000 / len(continuation)
    assert metrics.parse_error_share == syntax.error_bytes / len(continuation)
    assert metrics.unclosed_at_end == 1
    assert metrics.unmatched_closers_per_kb == 0.0


def test_stray_token_is_an_error_inside_the_continuation() -> None:
    prompt, continuation = b"const x = 1;\n", b"const y = ) 2;\n"
    syntax = syntax_stats(prompt, continuation)
    assert 0 < syntax.error_bytes < len(continuation)


def test_invented_identifiers_against_a_tiny_vocabulary() -> None:
    assert VOCABULARY.words == {"export", "class", "Vector3", "add", "sub", "as", "subtract", "const", "scale"}
    assert VOCABULARY.exports == {"Vector3", "add", "subtract"}
    prompt, continuation = b"const v = ", b"new Vector3( scale, frobnicate ).add( subtract, this.#zork );\n"
    metrics = sample_metrics(prompt, continuation, VOCABULARY)
    # Identifiers: Vector3 scale frobnicate add subtract zork ("#" dropped); new and this are keywords.
    assert metrics.identifiers == 6
    assert metrics.known_identifier_share == 4 / 6  # all but frobnicate and zork
    assert metrics.api_identifier_share == 3 / 6  # Vector3, add, subtract
    assert metrics.api_names_used == ("Vector3", "add", "subtract")
    assert metrics.parse_error_share == 0.0


def test_no_identifiers_leaves_the_shares_undefined() -> None:
    metrics = sample_metrics(b"const a = ", b"1 + 2;\n", VOCABULARY)
    assert metrics.identifiers == 0
    assert metrics.known_identifier_share is None and metrics.api_identifier_share is None
    assert mean_or_none([None, 0.5, 1.0]) == 0.75
    assert mean_or_none([None, None]) is None


def test_unmatched_closers_by_hand() -> None:
    prompt, continuation = b"if ( a ) {\n", b"\tb( c ] );\n}\n)"
    # The stack after the prompt is {; then ( opens, ] does not match ( (unmatched, skipped),
    # ) closes (, } closes {, and ) meets an empty stack (unmatched).
    stats = bracket_balance(prompt, continuation)
    assert (stats.unmatched_closers, stats.unclosed_at_end) == (2, 0)
    metrics = sample_metrics(prompt, continuation, VOCABULARY)
    assert metrics.unmatched_closers_per_kb == 2 * 1000 / len(continuation)


def test_brackets_count_the_prompt_for_the_stack_only() -> None:
    assert bracket_balance(b"] ( [", b"x") == bracket_balance(b"", b"( [")
    assert bracket_balance(b"] ( [", b"x").unmatched_closers == 0
    assert bracket_balance(b"] ( [", b"x").unclosed_at_end == 2
    # A plain character scan: brackets inside strings count too.
    assert bracket_balance(b"s = ", b"'(';").unclosed_at_end == 1


def test_exported_names_by_hand() -> None:
    source = b"""\
import { Mesh } from './Mesh.js';
class Hidden {}
const local = 1;
export class Box extends Mesh {}
export function make( a ) {}
export function* walk() {}
export async function load() {}
export const EPSILON = 1e-6, OTHER = 2;
export let counter = 0;
export default class Main {}
export { Hidden, local as Local, default as Named };
export { Reexported } from './Reexported.js';
// not exported: exportable, reexport { Quiet }
"""
    assert exported_names(source) == {"Box", "make", "walk", "load", "EPSILON", "counter", "Main", "Hidden",
                                      "Local", "Named", "Reexported"}


def test_training_words_are_whole_words() -> None:
    assert training_words(b"0x1F abc $d _e9 9z a.b") == {"abc", "$d", "_e9", "a", "b"}


def test_prompt_file_format() -> None:
    assert parse_prompts(b"a\\tb\\n\n\n  \nc\\\\n\\d\r\n", "p.txt") == [b"a\tb\n", b"c\\n\\d"]
    with pytest.raises(MlmError, match="no prompts"):
        parse_prompts(b"\n \n", "p.txt")
    with pytest.raises(MlmError, match="not UTF-8"):
        parse_prompts(b"ok\n\xff\xfe\n", "p.txt")


def test_top1_accuracy_from_arrays() -> None:
    assert top1_accuracy(np.array([1, 2, 3], dtype=np.uint8), np.array([0, 1, 9, 3], dtype=np.uint8)) == 2 / 3
    with pytest.raises(ValueError):
        top1_accuracy(np.array([1, 2], dtype=np.uint8), np.array([0, 1, 9, 3], dtype=np.uint8))


@pytest.fixture(scope="module")
def train_bytes() -> np.ndarray:
    return as_array(repetitive_corpus(300))


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_vectorised_argmax_equals_a_loop_over_distribution(train_bytes: np.ndarray, order: int) -> None:
    model = KneserNey.fit(train_bytes, order)
    # Validation-like bytes with contexts never seen in training (z, q, ~) and a tie-prone start.
    tokens = as_array(b"zq~" + repetitive_corpus(20, seed=1) + b"qq(z")
    loop = [int(np.argmax(model.distribution(tokens[max(0, i + 1 - order) : i + 1].tobytes())))
            for i in range(tokens.size - 1)]
    assert kn_predictions(model, tokens, batch=7).tolist() == loop
    assert kn_predictions(model, tokens[:2]).tolist() == loop[:1]


def test_argmax_ties_go_to_the_lowest_byte() -> None:
    # After x, b and a were each seen twice (b first), at every level: a tie that a must win.
    model = KneserNey.fit(as_array(b"xbxaxbxa"), 1)
    distribution = model.distribution(b"x")
    assert distribution[ord("a")] == distribution[ord("b")] == distribution.max()
    assert kn_argmax(model, np.array([ord("x")], dtype=np.int64), 1).tolist() == [ord("a")]
    assert kn_predictions(model, as_array(b"xx")).tolist() == [ord("a")]


def test_kn_sampler_is_deterministic_and_greedy_is_argmax(train_bytes: np.ndarray) -> None:
    model = KneserNey.fit(train_bytes, 2)
    prompt = b"const a = "
    first = kn_generate(model, prompt, 80, 0.8, seed=3)
    assert len(first) == 80
    assert kn_generate(model, prompt, 80, 0.8, seed=3) == first
    assert kn_generate(model, prompt, 80, 0.8, seed=4) != first
    greedy = kn_generate(model, prompt, 40, 0.0, seed=3)
    assert kn_generate(model, prompt, 40, 0.0, seed=99) == greedy, "greedy sampling ignores the seed"
    assert bytes(kn_predictions(model, as_array(prompt + greedy))[len(prompt) - 1 :]) == greedy


def test_choose_byte_follows_the_model_sampling_rule() -> None:
    """Same bits, temperature and seed: the same byte as ``sample`` would draw from int8 logits."""
    logits = np.random.default_rng(0).integers(-128, 128, 256).astype(np.int8)
    for temperature in (0.0, 0.5, 1.3):
        ours, theirs = np.random.default_rng(7), np.random.default_rng(7)
        probs = next_byte_probabilities(logits, SamplingOptions(temperature=temperature), np.zeros(256))
        for _ in range(20):
            expected = int(np.argmax(probs)) if temperature == 0 else int(theirs.choice(256, p=probs))
            assert choose_byte(logits / 16.0, temperature, ours) == expected


def settings(**changes: object) -> JudgeSettings:
    base = JudgeSettings(ckpt="best", run_dir=Path("egg-run"), data=None, prompts=DEFAULT_PROMPTS, samples=16,
                         length=256, temperature=0.5, seed=0, orders=(0, 1, 2), accuracy_bytes=None, threads=1)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(("changes", "needle"), [
    ({"samples": 0}, "--samples"), ({"length": 0}, "--length"), ({"temperature": math.nan}, "--temperature"),
    ({"temperature": math.inf}, "--temperature"), ({"temperature": -0.1}, "--temperature"),
    ({"accuracy_bytes": 1}, "--accuracy-bytes"), ({"threads": 0}, "--threads"),
])
def test_settings_are_validated(changes: dict, needle: str) -> None:
    with pytest.raises(MlmError, match=needle):
        settings(**changes).validate()


def test_samples_cycle_through_the_prompts_with_consecutive_seeds() -> None:
    plan = settings(prompts=(b"a", b"b", b"c"), samples=5, seed=10).sample_plan()
    assert plan == [(0, 10), (1, 11), (2, 12), (0, 13), (1, 14)]


# --- the command, through real subprocesses ---


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory with a headered input.txt and a 20-step tiny run in egg-run."""
    workdir = tmp_path_factory.mktemp("judge")
    (workdir / "input.txt").write_bytes(headered_corpus())
    run_cli("train", "--preset", "tiny", "--steps", "20", "--print-every", "10", "--sample-every", "0",
            "--threads", "1", cwd=workdir, check=True)
    return workdir


def judge_env(workdir: Path) -> dict[str, str]:
    """Baselines cached inside the test's directory, never in the user's cache."""
    return cli_env(MLM_CACHE_DIR=str(workdir / "cache"))


def assert_one_line_error(result, *needles: str) -> None:
    err = result.stderr.decode()
    assert result.returncode != 0
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in err, err


def test_judge_end_to_end_json(trained: Path) -> None:
    result = run_cli("judge", "--ckpt", "latest", "--samples", "2", "--length", "40", "--json",
                     cwd=trained, env=judge_env(trained), check=True)
    report = json.loads(result.stdout)
    assert list(report["samplers"]) == ["model", "kn0", "kn1", "kn2"]
    for name, sampler in report["samplers"].items():
        assert [(s["prompt_index"], s["seed"]) for s in sampler["per_sample"]] == [(0, 0), (1, 1)], name
        for metric in ("parse_error_share", "known_identifier_share", "api_identifier_share", "top1_accuracy"):
            values = [sampler[metric], *(s.get(metric) for s in sampler["per_sample"])]
            assert all(v is None or 0 <= v <= 1 for v in values), (name, metric, values)
        assert sampler["top1_accuracy"] is not None
        assert all(s["missing_per_kb"] >= 0 and s["unclosed_at_end"] >= 0 for s in sampler["per_sample"])
    evaluated = run_cli("eval", "--ckpt", "latest", "--json", "--results", "eval.tsv", cwd=trained, check=True)
    assert report["samplers"]["model"]["val_bpb"] == json.loads(evaluated.stdout)["val_bpb"]
    assert all(report["samplers"][f"kn{k}"]["val_bpb"] > 0 for k in range(3))
    # The corpus is three lines repeated, so the trigram guesses most validation bytes right.
    assert report["samplers"]["kn2"]["top1_accuracy"] > 0.5


def test_judge_prints_a_table_and_excerpts(trained: Path) -> None:
    result = run_cli("judge", "--ckpt", "latest", "--samples", "1", "--length", "30", "--orders", "1",
                     cwd=trained, env=judge_env(trained), check=True)
    out = result.stdout.decode()
    assert out.splitlines()[0].split()[:3] == ["sampler", "parse", "err"]
    assert "\nmodel " in out and "\nKN order 1 (bigram) " in out
    assert "--- KN order 1 (bigram): sample 0 (seed 0)" in out
    assert "fitting Kneser-Ney order 1" in result.stderr.decode()


@pytest.mark.parametrize(("content", "needle"), [(b"\n  \n", "no prompts"), (b"\xff\xfe\n", "not UTF-8")])
def test_bad_prompt_file_is_one_clear_line(tmp_path: Path, content: bytes, needle: str) -> None:
    (tmp_path / "p.txt").write_bytes(content)
    assert_one_line_error(run_cli("judge", "--prompts", "p.txt", cwd=tmp_path), "p.txt", needle)


def test_nan_temperature_is_one_clear_line(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("judge", "--temperature", "nan", cwd=tmp_path), "--temperature", "finite")


def test_missing_corpus_is_one_clear_line(trained: Path, tmp_path: Path) -> None:
    assert_one_line_error(run_cli("judge", "--run-dir", str(trained / "egg-run"), "--data", "gone.txt",
                                  cwd=tmp_path), "gone.txt", "--data FILE")
    original = read_checkpoint(trained / "egg-run" / "egg.ckpt.best")
    recorded_missing = write_checkpoint(dataclasses.replace(original, extra={"data_path": str(tmp_path / "gone.txt")}),
                                        tmp_path / "moved.ckpt")
    assert_one_line_error(run_cli("judge", "--ckpt", str(recorded_missing), cwd=tmp_path), "gone.txt", "--data FILE")
    unrecorded = write_checkpoint(dataclasses.replace(original, extra={}), tmp_path / "bare.ckpt")
    assert_one_line_error(run_cli("judge", "--ckpt", str(unrecorded), cwd=tmp_path), "does not record",
                          "--data FILE")
