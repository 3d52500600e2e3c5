"""Every SIMD kernel, schedule and thread count gives the numpy reference's results bit for bit.

Forcing a kernel also picks the build of the elementwise forward code that goes with it
(csrc/forward.c: the baseline instruction set for scalar, AVX2 for the x86 kernels), so
both builds of that code are checked here too.

The x86 GEMM picks an operand form per call and per panel of 4 weight rows (see
csrc/kernels_x86.c): X >= 0 (the MLP's ReLU output), |w| <= 64 with 8 or more X rows
(the +128 offset form), and the general |x|/sign form. The weight ranges below reach all
three: reference init (|w| <= 48) takes the offset form, full-range random weights the
general one, and populations under 8 per block the general one whatever the weights.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mlm.egg import engine as eng
from mlm.egg import reference as ref
from mlm.egg.config import ModelConfig
from mlm.egg.engine import CoreError, Engine

REPO_ROOT = Path(__file__).resolve().parents[1]
KERNELS = eng.available_kernels()
X86_KERNELS = ("avx2", "avxvnni", "avx512vnni")
FIELDS = ("losses", "fitness", "moved", "weights", "state", "vote memory")

#: Awkward shapes: K tails (48 = 32 + 16, 80 = 64 + 16), odd GEMM row counts, streams that
#: do not divide the pairs, one-token sequences.
CONFIGS = [
    ModelConfig(hidden=16, layers=1, mlp_ratio=1, seq_len=1, population=2, streams=1, noise_bits=2,
                noise_shift=1, threshold_z_q8=0, sparse_embedding_votes=0),
    ModelConfig(hidden=48, layers=2, mlp_ratio=3, seq_len=3, population=6, streams=2, noise_bits=4,
                noise_shift=3, threshold_z_q8=200, alpha_decay_steps=3, fitness_levels=4),
    ModelConfig(hidden=80, layers=1, mlp_ratio=3, seq_len=3, population=10, streams=4, noise_bits=3,
                noise_shift=4, threshold_z_q8=300, shift_base=3, vote_memory=1),
    ModelConfig(hidden=48, layers=1, mlp_ratio=1, seq_len=1, population=18, streams=4, noise_bits=4,
                noise_shift=2, threshold_z_q8=100, fitness_levels=8),
]
#: name -> weights for a config: reference init, |w| <= 64 everywhere, full int8 range.
WEIGHTS = {
    "init": lambda cfg, rng: ref.init_weights(cfg, 5),
    "le64": lambda cfg, rng: rng.integers(-64, 65, ref.n_weights(cfg)).astype(np.int8),
    "full": lambda cfg, rng: rng.integers(-127, 128, ref.n_weights(cfg)).astype(np.int8),
}


def cfg_id(cfg: ModelConfig) -> str:
    return f"h{cfg.hidden}m{cfg.mlp_ratio}p{cfg.population}s{cfg.seq_len}"


@pytest.fixture(params=KERNELS)
def kernel(request: pytest.FixtureRequest) -> Iterator[str]:
    """Force each kernel this CPU runs; the choice is process-wide, so restore it after."""
    before = eng.kernel_name()
    eng.force_kernel(request.param)
    try:
        yield request.param
    finally:
        eng.force_kernel(before)


def run_steps(cfg: ModelConfig, weights: np.ndarray, windows: list[np.ndarray], threads: int = 1,
              batched: bool = True) -> list[tuple]:
    """Train from ``weights`` on each window; per step: losses, fitness, moved, weights, state, vote memory."""
    engine = Engine(cfg, threads=threads, batched=batched)
    engine.weights[:] = weights
    out = []
    for step, win in enumerate(windows):
        r = engine.train_step(9, step, win)
        out.append((r.member_loss_q16.copy(), r.fitness.copy(), r.moved, engine.weights.copy(),
                    engine.state.copy(), engine.vote_memory.copy()))
    return out


def random_windows(cfg: ModelConfig, rng: np.random.Generator, steps: int) -> list[np.ndarray]:
    return [rng.integers(0, 256, (cfg.streams, cfg.seq_len + 1)).astype(np.uint8) for _ in range(steps)]


def assert_steps_match_reference(cfg: ModelConfig, weights: np.ndarray, windows: list[np.ndarray],
                                 kernel: str) -> None:
    """The core's steps from ``weights`` over ``windows`` equal the numpy reference's, output for output."""
    got = run_steps(cfg, weights, windows)
    state = np.zeros((cfg.population, cfg.layers, cfg.hidden), dtype=np.int8)
    memory = np.zeros(weights.size if cfg.vote_memory else 0, dtype=np.int16)
    w = weights
    for step, (win, (losses, fitness, moved, new_w, new_state, new_memory)) in enumerate(zip(windows, got,
                                                                                              strict=True)):
        expected = ref.train_step(cfg, w, state, 9, step, win, memory)
        w = expected["weights"]
        assert np.array_equal(losses, expected["losses"]), f"{kernel} step {step}: losses"
        assert np.array_equal(fitness, expected["fitness"]), f"{kernel} step {step}: fitness"
        assert moved == expected["moved"], f"{kernel} step {step}: moved"
        assert np.array_equal(new_w, w), f"{kernel} step {step}: weights"
        assert np.array_equal(new_state, state.reshape(-1)), f"{kernel} step {step}: state"
        assert np.array_equal(new_memory, memory), f"{kernel} step {step}: vote memory"


@pytest.mark.parametrize("weights", list(WEIGHTS))
@pytest.mark.parametrize("cfg", CONFIGS, ids=cfg_id)
def test_kernel_matches_reference(kernel: str, cfg: ModelConfig, weights: str) -> None:
    rng = np.random.default_rng(cfg.hidden * 7 + cfg.population)
    w = WEIGHTS[weights](cfg, rng)
    windows = random_windows(cfg, rng, 2)
    assert_steps_match_reference(cfg, w, windows, kernel)


def test_schedules_threads_and_kernels_agree() -> None:
    """Batched == member-at-a-time; 1, 2 and 3 threads; every kernel: one result."""
    cfg = ModelConfig(hidden=48, layers=2, mlp_ratio=3, seq_len=6, population=26, streams=3, noise_bits=4,
                      threshold_z_q8=200, fitness_levels=3, vote_memory=1, z_growth_steps=1, max_z_q8=9000,
                      cooldown_start=1, cooldown_end=2, weight_decay_q8=100, vector_z_q8=128)
    rng = np.random.default_rng(3)
    weights = WEIGHTS["init"](cfg, rng)
    weights[: weights.size // 2] = WEIGHTS["full"](cfg, rng)[: weights.size // 2]  # both operand forms
    windows = random_windows(cfg, rng, 2)
    baseline = run_steps(cfg, weights, windows)
    before = eng.kernel_name()
    try:
        for name in KERNELS:
            eng.force_kernel(name)
            for threads, batched in [(1, True), (2, True), (3, True), (1, False), (2, False)]:
                got = run_steps(cfg, weights, windows, threads, batched)
                where = f"{name} threads={threads} batched={batched}"
                for step, (a, b) in enumerate(zip(baseline, got, strict=True)):
                    for field, x, y in zip(FIELDS, a, b, strict=True):
                        assert np.array_equal(x, y), f"{where} step {step}: {field}"
    finally:
        eng.force_kernel(before)


def kernel_in_subprocess(value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLM_KERNEL=value, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-c", "from mlm.egg import engine; print(engine.kernel_name())"],
                          env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)


@pytest.mark.parametrize("name", KERNELS)
def test_mlm_kernel_forces_a_kernel(name: str) -> None:
    result = kernel_in_subprocess(name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == name
    assert result.stderr == ""


@pytest.mark.parametrize("name", ["avx512vnni", "avxvnni", "neon", "sse9"])
def test_unusable_mlm_kernel_warns_and_falls_back(name: str) -> None:
    if name in KERNELS:
        pytest.skip(f"{name} runs on this CPU")
    result = kernel_in_subprocess(name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == KERNELS[0], "the automatic choice is the best available kernel"
    assert f"mlm: ignoring MLM_KERNEL={name}: " in result.stderr
    assert f"(available: {','.join(KERNELS)})" in result.stderr


def test_force_kernel_refuses_what_it_cannot_run() -> None:
    before = eng.kernel_name()
    on_x86 = platform.machine().lower() in ("x86_64", "amd64")
    kind = "is not supported by this CPU" if on_x86 else "is not built for this platform"
    for name in (k for k in X86_KERNELS if k not in KERNELS):
        with pytest.raises(CoreError, match=f"kernel {name} {kind}"):
            eng.force_kernel(name)
    with pytest.raises(CoreError, match="unknown kernel sse9 .available: "):
        eng.force_kernel("sse9")
    assert eng.kernel_name() == before, "a refused kernel leaves the choice unchanged"


def test_saturating_activations_match_reference(kernel: str) -> None:
    """Full-range weights, no matmul shift to speak of and unscaled 4-bit noise: every elementwise kernel
    (norms, gates, shifts, residual adds, rank-1 terms, the loss) works on values that saturate."""
    cfg = ModelConfig(hidden=48, layers=2, mlp_ratio=3, seq_len=5, population=8, streams=3, noise_bits=4,
                      noise_shift=0, threshold_z_q8=100, shift_base=0)
    rng = np.random.default_rng(11)
    weights = WEIGHTS["full"](cfg, rng)
    engine = Engine(cfg)
    engine.weights[:] = weights
    tokens = rng.integers(0, 256, 40).astype(np.uint8)
    _, logits = engine.forward(tokens, want_logits=True)
    assert np.count_nonzero(np.abs(logits) == 127) > logits.size // 4, "logits saturate"
    windows = random_windows(cfg, rng, 2)
    assert_steps_match_reference(cfg, weights, windows, kernel)
