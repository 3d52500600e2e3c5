"""Model and algorithm configuration, presets and validation.

Everything in :class:`ModelConfig` defines the model and the training
algorithm: it travels inside every checkpoint, and two runs with the same
``ModelConfig`` and seed produce bit-identical weights. Run-time settings that
do not change the arithmetic (threads, step budget, logging intervals) live
elsewhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from mlm.errors import MlmError

#: The SIMD kernels process hidden vectors in blocks of 16 bytes (NEON width).
HIDDEN_MULTIPLE = 16
#: The largest vote threshold, 16 spreads (EGG_MAX_Z_Q8 in csrc/egg_internal.h).
MAX_THRESHOLD_Z_Q8 = 4096
#: The largest threshold ceiling with vote memory, 127 spreads (EGG_MEMORY_MAX_Z_Q8).
MAX_MEMORY_Z_Q8 = 32512
#: The weight average's horizon is at least 1/2**MAX_WEIGHT_AVERAGE of the steps (csrc/model.c says the same).
MAX_WEIGHT_AVERAGE = 16
#: Every field is an int32_t in the C core's egg_config.
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: The accepted range of each size field, for the command-line options (validate() says the same).
SIZE_RANGES = {"hidden": (HIDDEN_MULTIPLE, 4096), "layers": (1, 64), "mlp_ratio": (1, 8), "seq_len": (1, INT32_MAX),
               "population": (2, 65536)}
#: Fields added after the first release, with the values that reproduce the arithmetic of runs
#: whose stored configuration predates them: such runs resume with the rule they started with.
LEGACY_VALUES = {"fitness_levels": 1, "sparse_embedding_votes": 0, "vote_memory": 0, "z_growth_steps": 0,
                 "max_z_q8": MAX_THRESHOLD_Z_Q8, "cooldown_start": 0, "cooldown_end": 0, "weight_decay_q8": 0,
                 "vector_z_q8": 256, "weight_average": 0}


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and algorithm knobs. All integers, so the C core sees them exactly."""

    hidden: int = 64
    layers: int = 1
    mlp_ratio: int = 2
    seq_len: int = 16
    population: int = 1024
    #: Distinct data streams per step; pair p reads stream p % streams.
    streams: int = 512
    #: Noise values are u1 - u2 with u1, u2 uniform in [0, 2**noise_bits).
    noise_bits: int = 3
    #: A perturbation A[r]*B[c] is scaled by 2**-noise_shift.
    noise_shift: int = 3
    #: Threshold z in 1/256 units of the vote's null spread sigma^2*sqrt(sum of f^2): a weight moves
    #: when its vote (with vote_memory, its remembered sum of votes) passes it.
    threshold_z_q8: int = 1024
    #: Updated fraction alpha_t = D / (t + D); 0 disables the decay (alpha = 1).
    alpha_decay_steps: int = 0
    #: The threshold grows as z * sqrt((t + G) / G), at most 16; 0 keeps z constant.
    z_growth_steps: int = 2000
    #: Right shift after a matmul over `cols` inputs: shift_base + floor(log2(cols)/2).
    shift_base: int = 5
    #: Pair fitness is sign(loss difference) * 1..fitness_levels, by the rank of |difference|.
    fitness_levels: int = 8
    #: 1: only pairs whose window contains a byte vote on its embedding row.
    sparse_embedding_votes: int = 1
    #: 1: votes add up across steps in a per-weight memory; a weight moves when its memory passes z.
    vote_memory: int = 1
    #: Ceiling of the growing threshold, in 1/256 units (the cooldown goes past it).
    max_z_q8: int = MAX_THRESHOLD_Z_Q8
    #: Steps [cooldown_start, cooldown_end): the threshold is multiplied by (end - start) / (end - t), so
    #: the rate of moves falls linearly, up to the rule's largest threshold (MAX_MEMORY_Z_Q8 with vote
    #: memory, else MAX_THRESHOLD_Z_Q8); 0, 0 = no cooldown. Set from --steps and --cooldown.
    cooldown_start: int = 0
    cooldown_end: int = 0
    #: With vote memory: a matrix weight w's memory loses trunc(w * weight_decay_q8 / 256) (1/256 vote spreads)
    #: per step, pulling noise-driven drift back towards 0; 0 = off.
    weight_decay_q8: int = 0
    #: Threshold of the norm and bias vectors in 1/256 of the matrices' (256 = the same): their votes carry
    #: several times the matrices' signal-to-noise (docs/results.md).
    vector_z_q8: int = 256
    #: Keep an exponential average of the weights over about the last 1/2**weight_average of the steps, and
    #: evaluate, sample and export it (the training weights stay what ES perturbs); 0 = none.
    weight_average: int = 0

    @property
    def pairs(self) -> int:
        return self.population // 2

    @property
    def mlp_hidden(self) -> int:
        return self.hidden * self.mlp_ratio

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, int]) -> ModelConfig:
        """The configuration stored in a checkpoint (fields it predates take their LEGACY_VALUES)."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise MlmError(f"unknown configuration fields: {', '.join(sorted(unknown))}")
        return cls(**{**LEGACY_VALUES, **{k: int(v) for k, v in values.items()}})

    def replace(self, **changes: int | None) -> ModelConfig:
        """Return a copy with the non-None ``changes`` applied."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def overridden(self, **changes: int | None) -> ModelConfig:
        """``replace`` for a user's overrides of a preset: a new population without new streams takes
        the windows that fit it (one per pair when the preset has one per pair, never more than the pairs)."""
        population, streams = changes.get("population"), changes.get("streams")
        if population is not None and streams is None and population >= 2:
            pairs = population // 2
            changes["streams"] = pairs if self.streams == self.pairs else max(1, min(self.streams, pairs))
        return self.replace(**changes)

    def validate(self) -> ModelConfig:
        """Raise :class:`MlmError` naming the first nonsensical value and its fix.

        Each field is checked on its own first, so that the checks that combine fields (and build
        their messages from them) only ever see values in range: noise_bits 0 or -1 is a clear
        error, not a ZeroDivisionError or a negative shift.
        """
        for name, value in self.to_dict().items():
            if isinstance(value, bool) or not isinstance(value, int) or not INT32_MIN <= value <= INT32_MAX:
                raise MlmError(f"{name} must be an integer that fits the C core's int32 (got {value!r})")
        _raise_first([
            (self.hidden >= HIDDEN_MULTIPLE and self.hidden % HIDDEN_MULTIPLE == 0,
             f"--hidden must be a positive multiple of {HIDDEN_MULTIPLE} (got {self.hidden})"),
            *[(low <= getattr(self, name) <= high,
               f"--{name.replace('_', '-')} must be between {low} and {high} (got {getattr(self, name)})")
              for name, (low, high) in SIZE_RANGES.items()],
            (self.population % 2 == 0,
             f"--population must be an even number: members come in +/- pairs (got {self.population})"),
            (1 <= self.streams <= max(1, self.pairs),
             f"streams must be between 1 and population/2 = {self.pairs} (got {self.streams})"),
            (1 <= self.noise_bits <= 4, f"noise_bits must be between 1 and 4 (got {self.noise_bits})"),
            (0 <= self.noise_shift <= 16, f"noise_shift must be between 0 and 16 (got {self.noise_shift})"),
            (0 <= self.threshold_z_q8 <= MAX_THRESHOLD_Z_Q8,
             f"threshold_z_q8 must be between 0 and {MAX_THRESHOLD_Z_Q8} (got {self.threshold_z_q8})"),
            (self.alpha_decay_steps >= 0,
             f"alpha_decay_steps must be 0 (no decay) or positive (got {self.alpha_decay_steps})"),
            (self.z_growth_steps >= 0,
             f"z_growth_steps must be 0 (constant z) or positive (got {self.z_growth_steps})"),
            (0 <= self.shift_base <= 16, f"shift_base must be between 0 and 16 (got {self.shift_base})"),
        ])
        _raise_first([
            (self.fitness_levels >= 1 and self.fitness_levels * ((1 << self.noise_bits) - 1) <= 127,
             f"fitness_levels must be between 1 and {127 // ((1 << self.noise_bits) - 1)} with noise_bits "
             f"{self.noise_bits}, so that fitness times noise fits in int8 (got {self.fitness_levels})"),
            (self.sparse_embedding_votes in (0, 1),
             f"sparse_embedding_votes must be 0 or 1 (got {self.sparse_embedding_votes})"),
            (self.vote_memory in (0, 1), f"vote_memory must be 0 or 1 (got {self.vote_memory})"),
            (self.threshold_z_q8 <= self.max_z_q8 <= (MAX_MEMORY_Z_Q8 if self.vote_memory else MAX_THRESHOLD_Z_Q8),
             f"max_z_q8 must be between threshold_z_q8 ({self.threshold_z_q8}) and "
             f"{MAX_MEMORY_Z_Q8 if self.vote_memory else MAX_THRESHOLD_Z_Q8} (got {self.max_z_q8})"),
            ((self.cooldown_start, self.cooldown_end) == (0, 0) or 0 <= self.cooldown_start < self.cooldown_end,
             f"the cooldown must start before it ends (got steps {self.cooldown_start} to {self.cooldown_end})"),
            (0 <= self.weight_decay_q8 <= 256 and (self.vote_memory or not self.weight_decay_q8),
             f"weight_decay_q8 must be between 0 and 256, and 0 without vote memory (got {self.weight_decay_q8})"),
            (1 <= self.vector_z_q8 <= 4096, f"vector_z_q8 must be between 1 and 4096 (got {self.vector_z_q8})"),
            (0 <= self.weight_average <= MAX_WEIGHT_AVERAGE,
             f"weight_average must be between 0 and {MAX_WEIGHT_AVERAGE} (got {self.weight_average})"),
        ])
        return self


def _raise_first(checks: list[tuple[bool, str]]) -> None:
    """Raise the message of the first failed check."""
    for ok, message in checks:
        if not ok:
            raise MlmError(message)


PRESETS: dict[str, ModelConfig] = {
    # Seconds on any machine: for tests and smoke runs.
    "tiny": ModelConfig(hidden=32, layers=1, mlp_ratio=2, seq_len=32, population=128, streams=8),
    # Learns visibly within minutes on a 2-core laptop CPU. Many pairs on short windows: a vote's
    # signal-to-noise grows as the square root of the pairs, at the same population-tokens per step
    # (docs/results.md: 1,024 members of 16 bytes beat 256 of 64 by 0.11 bits/byte at 10,000 steps).
    "small": ModelConfig(),
    # The sizes of the reference trainer egg.c (not its defects).
    "reference": ModelConfig(hidden=512, layers=4, mlp_ratio=4, seq_len=4096, population=128, streams=8),
}


def preset(name: str) -> ModelConfig:
    """Look up a preset by name, with a one-line error listing the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise MlmError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}") from None
