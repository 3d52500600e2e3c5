"""Model and algorithm configuration, presets and validation.

Everything in :class:`ModelConfig` defines the model and the training
algorithm: it travels inside every checkpoint, and two runs with the same
``ModelConfig`` and seed produce bit-identical weights. Run-time settings that
do not change the arithmetic (threads, step budget, logging intervals) live
elsewhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields

from mlm.egg.core import ffi, lib
from mlm.errors import MlmError

#: The SIMD kernels process hidden vectors in blocks of 16 bytes (NEON width).
HIDDEN_MULTIPLE = lib.EGG_HIDDEN_MULTIPLE
#: The largest vote threshold, 16 spreads.
MAX_THRESHOLD_Z_Q8 = lib.EGG_MAX_Z_Q8
#: The largest threshold ceiling with vote memory, 127 spreads.
MAX_MEMORY_Z_Q8 = lib.EGG_MEMORY_MAX_Z_Q8
#: Every field is an int32_t in the C core's egg_config (checked below).
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: Units of the fields in 1/256 (``_q8``): their flags take the field divided by this.
Q8 = 256


@dataclass(frozen=True)
class Knob:
    """How one :class:`ModelConfig` field meets the world outside the C core.

    ``low``/``high`` bound the field on its own (``validate`` adds the checks that combine fields);
    ``tag`` names it in the one-line configuration of logs and results; ``help`` is the help of its
    ``train`` flag (empty: no flag); the flag is ``--field-name`` unless ``flag`` says otherwise and
    takes the field divided by ``scale``; ``legacy`` is the value that reproduces the arithmetic of
    checkpoints written before the field existed (None: every checkpoint has it).
    """

    low: int
    high: int
    tag: str
    help: str = ""
    flag: str = ""
    scale: int = 1
    legacy: int | None = None


def knob(default: int, low: int, high: int, tag: str, help: str = "", *, flag: str = "", scale: int = 1,
         legacy: int | None = None) -> int:
    """A ModelConfig field with its :class:`Knob`."""
    return field(default=default, metadata={"knob": Knob(low, high, tag, help, flag, scale, legacy)})


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and algorithm knobs. All integers, so the C core sees them exactly.

    The one table of the configuration: each field's :class:`Knob` makes its ``train`` flag, its
    range check, its tag in ``compact_config`` and its value for older checkpoints; ``egg_config``
    in ``csrc/egg.h`` must have the same fields (checked at import).
    """

    hidden: int = knob(64, HIDDEN_MULTIPLE, lib.EGG_MAX_HIDDEN, "h",
                       f"Model width (multiple of {HIDDEN_MULTIPLE}).")
    layers: int = knob(1, 1, lib.EGG_MAX_LAYERS, "l", "Number of GRU+MLP blocks.")
    #: MLP width = hidden * mlp_ratio (no train flag: `bench --mlp-ratio` explores it).
    mlp_ratio: int = knob(2, 1, lib.EGG_MAX_MLP_RATIO, "m")
    seq_len: int = knob(16, 1, INT32_MAX, "t", "Bytes per member per step.")
    population: int = knob(1024, 2, lib.EGG_MAX_POPULATION, "p",
                           "Members per step (even: +/- pairs); without --streams the data windows follow it.")
    #: Distinct data streams per step; pair p reads stream p % streams.
    streams: int = knob(512, 1, lib.EGG_MAX_POPULATION // 2, "s", "Distinct data windows per step.")
    #: Noise values are u1 - u2 with u1, u2 uniform in [0, 2**noise_bits).
    noise_bits: int = knob(3, 1, lib.EGG_MAX_NOISE_BITS, "nb",
                           "Noise values u1 - u2 with u uniform on [0, 2^noise-bits).")
    #: A perturbation A[r]*B[c] is scaled by 2**-noise_shift.
    noise_shift: int = knob(3, 0, lib.EGG_MAX_SHIFT, "ns", "Perturbation scale: A*B >> noise-shift.")
    #: Threshold z in 1/256 units of the vote's null spread sigma^2*sqrt(sum of f^2): a weight moves
    #: when its vote (with vote_memory, its remembered sum of votes) passes it.
    threshold_z_q8: int = knob(
        1024, 0, MAX_THRESHOLD_Z_Q8, "z",
        "A weight moves when its vote (with vote memory: its summed votes) passes z vote spreads.",
        flag="--threshold-z", scale=Q8)
    #: Updated fraction alpha_t = D / (t + D); 0 disables the decay (alpha = 1).
    alpha_decay_steps: int = knob(0, 0, INT32_MAX, "a", "Updated fraction D/(t+D); 0 = no decay.",
                                  flag="--alpha-decay")
    #: The threshold grows as z * sqrt((t + G) / G), at most 16; 0 keeps z constant.
    z_growth_steps: int = knob(2000, 0, INT32_MAX, "g",
                               "The threshold grows as z*sqrt((t+G)/G) over G steps; 0 = constant.",
                               flag="--z-growth", legacy=0)
    #: Right shift after a matmul over `cols` inputs: shift_base + floor(log2(cols)/2).
    shift_base: int = knob(5, 0, lib.EGG_MAX_SHIFT, "sb", "Matmul output shift: shift-base + floor(log2(inputs)/2).")
    #: Pair fitness is sign(loss difference) * 1..fitness_levels, by the rank of |difference|.
    fitness_levels: int = knob(
        8, 1, lib.EGG_MAX_FITNESS_NOISE, "f",
        "Pair fitness: sign of the loss difference times 1..levels by the rank of its size (1 = sign only).",
        legacy=1)
    #: 1: only pairs whose window contains a byte vote on its embedding row.
    sparse_embedding_votes: int = knob(1, 0, 1, "e", "1: only pairs whose window holds a byte vote on its "
                                       "embedding row.", legacy=0)
    #: 1: votes add up across steps in a per-weight memory; a weight moves when its memory passes z.
    vote_memory: int = knob(1, 0, 1, "vm", "1: votes add up across steps in a per-weight memory; 0: each step's "
                            "vote alone.", legacy=0)
    #: Ceiling of the growing threshold, in 1/256 units (the cooldown goes past it).
    max_z_q8: int = knob(MAX_THRESHOLD_Z_Q8, 0, MAX_MEMORY_Z_Q8, "zc",
                         "Ceiling of the growing threshold, in vote spreads.", flag="--max-z", scale=Q8,
                         legacy=MAX_THRESHOLD_Z_Q8)
    #: Steps [cooldown_start, cooldown_end): the threshold is multiplied by (end - start) / (end - t), so
    #: the rate of moves falls linearly, up to the rule's largest threshold (MAX_MEMORY_Z_Q8 with vote
    #: memory, else MAX_THRESHOLD_Z_Q8); 0, 0 = no cooldown. Set from --steps and --cooldown.
    cooldown_start: int = knob(0, 0, INT32_MAX, "cs", legacy=0)
    cooldown_end: int = knob(0, 0, INT32_MAX, "ce", legacy=0)
    #: With vote memory: a matrix weight w's memory loses trunc(w * weight_decay_q8 / 256) (1/256 vote spreads)
    #: per step, pulling noise-driven drift back towards 0; 0 = off.
    weight_decay_q8: int = knob(
        0, 0, lib.EGG_MAX_WEIGHT_DECAY_Q8, "wd",
        "With vote memory: a matrix weight w pulls its memory towards 0 by w * this / 256 vote spreads per step.",
        flag="--weight-decay", scale=Q8, legacy=0)
    #: Threshold of the norm and bias vectors in 1/256 of the matrices' (256 = the same): their votes carry
    #: several times the matrices' signal-to-noise (docs/results.md).
    vector_z_q8: int = knob(256, 1, lib.EGG_MAX_VECTOR_Z_Q8, "vz",
                            "Threshold of norm and bias vectors as a multiple of the matrices'.", flag="--vector-z",
                            scale=Q8, legacy=256)
    weight_average: int = knob(3, 0, lib.EGG_MAX_WEIGHT_AVERAGE, "wa",
                               "Evaluate, sample and export an exponential average of the weights over about the "
                               "last 1/2^K of the steps (late moves are mostly noise); 0 = the weights themselves.",
                               legacy=0)

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
            (self.hidden % HIDDEN_MULTIPLE == 0 and self.hidden > 0,
             f"--hidden must be a positive multiple of {HIDDEN_MULTIPLE} (got {self.hidden})"),
            *[(knob.low <= getattr(self, name) <= knob.high, range_message(name, getattr(self, name)))
              for name, knob in KNOBS.items()],
            (self.population % 2 == 0,
             f"--population must be an even number: members come in +/- pairs (got {self.population})"),
            (self.streams <= self.pairs,
             f"streams must be between 1 and population/2 = {self.pairs} (got {self.streams})"),
        ])
        _raise_first([
            (self.fitness_levels * ((1 << self.noise_bits) - 1) <= lib.EGG_MAX_FITNESS_NOISE,
             f"--fitness-levels must be between 1 and {lib.EGG_MAX_FITNESS_NOISE // ((1 << self.noise_bits) - 1)} "
             f"with noise_bits {self.noise_bits}, so that fitness times noise fits in int8 "
             f"(got {self.fitness_levels})"),
            (self.threshold_z_q8 <= self.max_z_q8 <= (MAX_MEMORY_Z_Q8 if self.vote_memory else MAX_THRESHOLD_Z_Q8),
             f"max_z_q8 must be between threshold_z_q8 ({self.threshold_z_q8}) and "
             f"{MAX_MEMORY_Z_Q8 if self.vote_memory else MAX_THRESHOLD_Z_Q8} (got {self.max_z_q8})"),
            ((self.cooldown_start, self.cooldown_end) == (0, 0) or self.cooldown_start < self.cooldown_end,
             f"the cooldown must start before it ends (got steps {self.cooldown_start} to {self.cooldown_end})"),
            (self.vote_memory or not self.weight_decay_q8,
             f"--weight-decay must be 0 without vote memory (got {self.weight_decay_q8 / Q8:g})"),
        ])
        return self


#: Every field's :class:`Knob`, in field order.
KNOBS: dict[str, Knob] = {f.name: f.metadata["knob"] for f in fields(ModelConfig)}
#: Fields added after the first release, with the values that reproduce the arithmetic of runs
#: whose stored configuration predates them: such runs resume with the rule they started with.
LEGACY_VALUES = {name: knob.legacy for name, knob in KNOBS.items() if knob.legacy is not None}


def flag_of(name: str) -> str:
    """The ``train`` flag of a field (whether or not the field has one): ``--seq-len``, ``--threshold-z``."""
    return KNOBS[name].flag or "--" + name.replace("_", "-")


def in_flag_units(name: str, value: int) -> int | float:
    """A field's value as its flag takes it (``threshold_z_q8`` 1024 is ``--threshold-z 4``)."""
    scale = KNOBS[name].scale
    return value if scale == 1 else value / scale


def from_flag_units(name: str, value: int | float) -> int:
    """The field value of a flag's value (``--threshold-z 4`` is ``threshold_z_q8`` 1024)."""
    scale = KNOBS[name].scale
    return value if scale == 1 else round(value * scale)


def range_message(name: str, value: int) -> str:
    """The error for a field outside its own range, in the units of its flag when it has one."""
    knob = KNOBS[name]
    label = flag_of(name) if knob.help else name
    low, high, got = (f"{in_flag_units(name, v):g}" if knob.scale != 1 else str(v)
                      for v in (knob.low, knob.high, value))
    return f"{label} must be between {low} and {high} (got {got})"


def field_disagreements(ours: list[str], core: dict[str, str]) -> list[str]:
    """How the fields ``ours`` (ModelConfig's) and ``core`` (egg_config's, name -> C type) disagree,
    one line each: ffi.new would zero-fill a field ModelConfig lacks, and validate() relies on int32."""
    problems = [f"egg_config.{name} (csrc/egg.h) has no ModelConfig field" for name in core if name not in ours]
    problems += [f"ModelConfig.{name} has no egg_config field in csrc/egg.h" for name in ours if name not in core]
    problems += [f"egg_config.{name} is {ctype}, not int32_t" for name, ctype in core.items() if ctype != "int32_t"]
    return problems


def _check_against_core() -> None:
    """Refuse to run with a configuration table that the compiled core does not share."""
    problems = field_disagreements([f.name for f in fields(ModelConfig)],
                                   {name: f.type.cname for name, f in ffi.typeof("egg_config").fields})
    if problems:
        raise ImportError("mlm/egg/config.py and the C core disagree: " + "; ".join(problems)
                          + " (add the field to both, then rebuild the core)")


_check_against_core()


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
