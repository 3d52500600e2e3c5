"""Where every tensor lives in the C core's flat buffers, and how big those buffers are.

One definition for the production code (export, the trainer's checkpoint checks, the benchmarks) and
for the numpy specification (:mod:`mlm.egg.reference`); ``tests/test_layout.py`` holds it against the
tensor table of ``egg_tensor_info`` (``build_layout`` in ``csrc/model.c``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlm.egg.config import ModelConfig
from mlm.egg.core import lib

#: Byte-level model: embedding and head rows, logits per prediction.
VOCAB = lib.EGG_VOCAB
#: Kinds whose tensors multiply an activation: the weight matrices of the forward pass.
MATRIX_KINDS = ("matrix", "head")


@dataclass(frozen=True)
class Tensor:
    """One trained tensor in the flat weight buffer; vectors have rows == 1."""

    name: str
    rows: int
    cols: int
    offset: int
    kind: str  # "embedding", "matrix", "head", "norm" or "bias"

    @property
    def size(self) -> int:
        return self.rows * self.cols


def tensor_layout(cfg: ModelConfig) -> list[Tensor]:
    """The order, shapes and offsets of every tensor, as the C core lays them out."""
    h, mh = cfg.hidden, cfg.mlp_hidden
    specs: list[tuple[str, int, int, str]] = [("embedding", VOCAB, h, "embedding")]
    for layer in range(cfg.layers):
        p = f"layers.{layer}."
        specs += [
            (p + "norm1", 1, h, "norm"),
            (p + "gru.w_gate", h, h, "matrix"),
            (p + "gru.u_gate", h, h, "matrix"),
            (p + "gru.w_cand", h, h, "matrix"),
            (p + "gru.u_cand", h, h, "matrix"),
            (p + "gru.b_gate", 1, h, "bias"),
            (p + "gru.b_cand", 1, h, "bias"),
            (p + "norm2", 1, h, "norm"),
            (p + "mlp.up", mh, h, "matrix"),
            (p + "mlp.down", h, mh, "matrix"),
        ]
    specs += [("norm_final", 1, h, "norm"), ("head", VOCAB, h, "head")]
    tensors, offset = [], 0
    for name, rows, cols, kind in specs:
        tensors.append(Tensor(name, rows, cols, offset, kind))
        offset += rows * cols
    return tensors


def n_weights(cfg: ModelConfig) -> int:
    """Bytes of the weight buffer (egg_weights_size)."""
    last = tensor_layout(cfg)[-1]
    return last.offset + last.size


def n_state(cfg: ModelConfig) -> int:
    """Size of the population's recurrent state: one GRU vector per member and layer (egg_state_size)."""
    return cfg.population * cfg.layers * cfg.hidden


def n_vote_memory(cfg: ModelConfig) -> int:
    """Entries (int16) of the per-weight vote memory (egg_vote_memory_size): one per weight with vote memory."""
    return n_weights(cfg) * cfg.vote_memory


def n_weight_average(cfg: ModelConfig) -> int:
    """Entries (int32) of the weight average (egg_weight_average_size): one per weight when it is kept."""
    return n_weights(cfg) * bool(cfg.weight_average)


def expected_sizes(cfg: ModelConfig) -> tuple[int, int]:
    """A checkpoint's array sizes for ``cfg``: the weights, and the training state (the population's
    state, then the vote memory as int16 bytes and the weight average as int32 bytes:
    Engine.training_state)."""
    return n_weights(cfg), n_state(cfg) + 2 * n_vote_memory(cfg) + 4 * n_weight_average(cfg)
