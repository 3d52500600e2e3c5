"""mlm/egg/layout.py against the C core's tensor table and buffer sizes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mlm.egg.config import PRESETS, ModelConfig
from mlm.egg.engine import Engine
from mlm.egg.layout import (
    MATRIX_KINDS,
    VOCAB,
    expected_sizes,
    n_state,
    n_vote_memory,
    n_weight_average,
    n_weights,
    tensor_layout,
)


@st.composite
def small_configs(draw: st.DrawFn) -> ModelConfig:
    population = 2 * draw(st.integers(1, 8))
    return ModelConfig(hidden=16 * draw(st.integers(1, 6)), layers=draw(st.integers(1, 4)),
                       mlp_ratio=draw(st.integers(1, 8)), seq_len=draw(st.integers(1, 64)), population=population,
                       streams=draw(st.integers(1, population // 2)),
                       vote_memory=draw(st.integers(0, 1)), weight_average=draw(st.integers(0, 3))).validate()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(config=small_configs())
def test_the_layout_is_the_cores(config: ModelConfig) -> None:
    engine = Engine(config)
    layout = tensor_layout(config)
    assert [(t.name, t.rows, t.cols, t.offset) for t in engine.tensors()] == \
        [(t.name, t.rows, t.cols, t.offset) for t in layout]
    assert (engine.weights.size, engine.state.size, engine.vote_memory.size, engine.weight_average.size) == \
        (n_weights(config), n_state(config), n_vote_memory(config), n_weight_average(config))
    assert expected_sizes(config) == (engine.weights.size, engine.training_state().size)


def test_the_tensors_tile_the_weights_and_say_their_kind() -> None:
    config = PRESETS["reference"]
    layout = tensor_layout(config)
    assert [t.offset for t in layout[1:]] == [t.offset + t.size for t in layout[:-1]]
    assert layout[0].name == "embedding" and (layout[0].rows, layout[-1].rows) == (VOCAB, VOCAB)
    kinds = {t.name.rsplit(".", 1)[-1]: t.kind for t in layout}
    assert kinds == {"embedding": "embedding", "norm1": "norm", "w_gate": "matrix", "u_gate": "matrix",
                     "w_cand": "matrix", "u_cand": "matrix", "b_gate": "bias", "b_cand": "bias", "norm2": "norm",
                     "up": "matrix", "down": "matrix", "norm_final": "norm", "head": "head"}
    assert all(t.rows == 1 for t in layout if t.kind not in MATRIX_KINDS + ("embedding",))
