"""The configuration table (config.KNOBS) against the C core: the same fields, the same verdicts, and
every train flag reaching its field."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import cli_env
from mlm.egg import cli
from mlm.egg.config import (
    INT32_MAX,
    INT32_MIN,
    KNOBS,
    PRESETS,
    ModelConfig,
    field_disagreements,
    flag_of,
    in_flag_units,
)
from mlm.egg.core import ffi, lib
from mlm.egg.layout import expected_sizes, n_state, n_weights
from mlm.errors import MlmError

ROOT = Path(__file__).resolve().parents[1]


def near(*points: int) -> st.SearchStrategy[int]:
    """Each point and its neighbours, within int32."""
    return st.sampled_from(sorted({min(max(p + d, INT32_MIN), INT32_MAX) for p in points for d in (-1, 0, 1)}))


def around_bounds(name: str, *more: int) -> st.SearchStrategy[int]:
    """A field's value next to its own bounds, the int32 extremes, or anything in int32."""
    knob = KNOBS[name]
    return st.one_of(near(knob.low, knob.high, INT32_MIN, INT32_MAX, *more), st.integers(INT32_MIN, INT32_MAX))


@st.composite
def configs_near_the_bounds(draw: st.DrawFn) -> ModelConfig:
    """A small valid configuration with up to three fields moved to, just inside or just outside a bound:
    its own, one that combines fields, an int32 extreme or a product that wraps int32
    (2^32 / (2^noise_bits - 1) + 1). Sizes stay small enough to allocate."""
    v: dict[str, int] = {}
    moved = draw(st.sets(st.sampled_from(list(KNOBS)), max_size=3))

    def pick(name: str, valid: st.SearchStrategy[int], *edges: int) -> None:
        knob = KNOBS[name]
        v[name] = draw(near(knob.low, knob.high, INT32_MIN, INT32_MAX, *edges) if name in moved else valid)

    pick("hidden", st.sampled_from([16, 32]), 0, 8, 4112)
    pick("layers", st.integers(1, 2))
    pick("mlp_ratio", st.integers(1, 2))
    pick("seq_len", st.integers(1, 16))
    pick("population", st.sampled_from([2, 4, 8]), 4, 8)
    pairs = v["population"] // 2
    pick("streams", st.integers(1, max(1, pairs)), pairs)
    pick("noise_bits", st.integers(1, lib.EGG_MAX_NOISE_BITS))
    pick("noise_shift", st.integers(0, lib.EGG_MAX_SHIFT))
    pick("threshold_z_q8", st.integers(0, lib.EGG_MAX_Z_Q8))
    pick("alpha_decay_steps", st.integers(0, 10))
    pick("z_growth_steps", st.integers(0, 10))
    pick("shift_base", st.integers(0, lib.EGG_MAX_SHIFT))
    most = lib.EGG_MAX_FITNESS_NOISE // ((1 << min(max(v["noise_bits"], 1), lib.EGG_MAX_NOISE_BITS)) - 1)
    pick("fitness_levels", st.integers(1, most), most, *(2**32 // k + 1 for k in (3, 7, 15)))
    pick("sparse_embedding_votes", st.integers(0, 1))
    pick("vote_memory", st.integers(0, 1))
    largest = lib.EGG_MEMORY_MAX_Z_Q8 if v["vote_memory"] == 1 else lib.EGG_MAX_Z_Q8
    low_z = min(max(v["threshold_z_q8"], 0), largest)
    pick("max_z_q8", st.integers(low_z, largest), v["threshold_z_q8"], lib.EGG_MAX_Z_Q8)
    pick("cooldown_end", st.sampled_from([0, 5, 100]))
    pick("cooldown_start", st.integers(0, max(0, v["cooldown_end"] - 1)), v["cooldown_end"])
    pick("weight_decay_q8", st.integers(0, lib.EGG_MAX_WEIGHT_DECAY_Q8 if v["vote_memory"] == 1 else 0))
    pick("vector_z_q8", st.integers(1, lib.EGG_MAX_VECTOR_Z_Q8))
    config = ModelConfig(**v)
    if python_verdict(config) is None:  # egg_create will allocate its weights, state and vote memory
        assume(3 * n_weights(config) + n_state(config) <= 2**30)
    return config


def core_verdict(config: ModelConfig) -> str | None:
    """None when egg_create accepts ``config``, else its error."""
    model = lib.egg_create(ffi.new("egg_config *", config.to_dict()))
    if model == ffi.NULL:
        return ffi.string(lib.egg_last_error()).decode()
    lib.egg_free(model)
    return None


def python_verdict(config: ModelConfig) -> str | None:
    try:
        config.validate()
    except MlmError as error:
        return str(error)
    return None


@settings(max_examples=2000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                                     HealthCheck.filter_too_much])
@given(config=configs_near_the_bounds())
def test_python_accepts_a_configuration_exactly_when_the_core_does(config: ModelConfig) -> None:
    python, core = python_verdict(config), core_verdict(config)
    assert (python is None) == (core is None), f"python: {python}; core: {core}; {config}"
    assert core is None or "out of memory" not in core


def test_the_core_refuses_a_fitness_product_that_wraps_int32() -> None:
    """fitness_levels 2^32/3 + 1 times 3 (noise_bits 2) is 2 after int32 wraps: the core once accepted it."""
    config = PRESETS["tiny"].replace(noise_bits=2, fitness_levels=2**32 // 3 + 1)
    assert python_verdict(config) and core_verdict(config)


def test_the_table_and_egg_config_have_the_same_int32_fields() -> None:
    core = {name: f.type.cname for name, f in ffi.typeof("egg_config").fields}
    assert list(core) == list(KNOBS) and field_disagreements(list(KNOBS), core) == []


def test_a_field_missing_on_either_side_is_named() -> None:
    core = {name: f.type.cname for name, f in ffi.typeof("egg_config").fields}
    ours = [name for name in KNOBS if name != "vector_z_q8"] + ["new_knob"]
    problems = field_disagreements(ours, {**core, "seq_len": "int64_t"})
    assert problems == ["egg_config.vector_z_q8 (csrc/egg.h) has no ModelConfig field",
                        "ModelConfig.new_knob has no egg_config field in csrc/egg.h",
                        "egg_config.seq_len is int64_t, not int32_t"]


def other_valid_value(name: str, base: ModelConfig) -> int:
    """A value of field ``name`` that differs from ``base``'s and that validate() accepts with base's others."""
    knob = KNOBS[name]
    for value in (knob.high, knob.low, knob.low + 1, base.pairs // 2, getattr(base, name) + 1):
        if value != getattr(base, name) and python_verdict(base.overridden(**{name: value})) is None:
            return value
    raise AssertionError(f"no other valid value of {name}")


@pytest.mark.parametrize("name", [name for name, knob in KNOBS.items() if knob.help])
def test_every_flag_reaches_its_field(name: str) -> None:
    base = PRESETS["tiny"]
    value = other_valid_value(name, base)
    flag_value = in_flag_units(name, value)
    ctx = cli.train.make_context("train", ["--preset", "tiny", flag_of(name), str(flag_value)])
    settings = cli.train_settings(ctx.params, preset_given=True)
    assert getattr(settings.config, name) == value and settings.explicit == {name: value}
    assert base.overridden(**{name: value}) == settings.config


def test_fields_without_a_flag_are_set_by_the_run() -> None:
    """mlp_ratio is a preset's (and bench's) choice; the cooldown is fixed from --steps and --cooldown."""
    flags = {opt for param in cli.train.params if isinstance(param, click.Option) for opt in param.opts}
    unflagged = {name for name, knob in KNOBS.items() if not knob.help}
    assert unflagged == {"mlp_ratio", "cooldown_start", "cooldown_end"}
    assert not {flag_of(name) for name in unflagged} & flags


def test_old_checkpoints_configurations_take_their_legacy_values() -> None:
    """A configuration stored before the later fields existed loads with the rule it ran with."""
    first_release = {name: getattr(PRESETS["tiny"], name) for name in
                     ("hidden", "layers", "mlp_ratio", "seq_len", "population", "streams", "noise_bits",
                      "noise_shift", "threshold_z_q8", "alpha_decay_steps", "shift_base")}
    config = ModelConfig.from_dict(first_release).validate()
    assert (config.fitness_levels, config.vote_memory, config.z_growth_steps, config.max_z_q8,
            config.vector_z_q8) == (1, 0, 0, lib.EGG_MAX_Z_Q8, 256)
    assert expected_sizes(config)[1] == config.population * config.hidden  # no vote memory in the state


def test_without_a_built_core_the_cli_says_so_in_one_line(tmp_path: Path) -> None:
    """The flags' ranges come from the core, so the CLI cannot even show --help without it."""
    if list(importlib.metadata.distributions(name="mlm")):
        pytest.skip("an installed mlm would serve its core to the copy")
    shutil.copytree(ROOT / "mlm", tmp_path / "mlm", ignore=shutil.ignore_patterns("_core*", "__pycache__"))
    result = subprocess.run([sys.executable, "-m", "mlm.egg", "--help"], cwd=tmp_path, capture_output=True, text=True,
                            env=cli_env(PYTHONPATH=str(tmp_path)), timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: the C core of mlm is not built: run `pip install .` (or `python mlm/egg/_build.py` to build it "
        "inside this checkout)"]
