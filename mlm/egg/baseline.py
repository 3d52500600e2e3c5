"""Kneser–Ney byte n-gram baselines: the bits per byte a trained model has to beat.

An *order k* model predicts a byte from the previous ``k`` bytes: order 0 is a unigram,
order 1 a bigram, order 2 a trigram, order 3 a 4-gram. Each model is fit on the training
split and scored on the pinned validation split that ``eval`` uses, with the same
convention: every validation byte after the first is predicted once (``n - 1``
predictions), its context read from the validation bytes themselves. The first ``k - 1``
predictions have fewer than ``k`` bytes before them; they simply use the shorter context,
that is the model's own lower-order distribution, exactly as for a context never seen in
training.

Interpolated Kneser–Ney (Chen & Goodman 1998, one discount per order). With ``h`` a
context of ``j`` bytes and ``h'`` the same context without its oldest byte::

    p_j(w | h) = (max(c_j(h w) - D_j, 0) + D_j * N_j(h) * p_{j-1}(w | h')) / C_j(h)
    p_j(w | h) = p_{j-1}(w | h')          when C_j(h) = 0 (context never seen)
    p_{-1}(w)  = 1 / 256

``c_j`` is the raw count for the model's own order and the continuation count
(number of distinct bytes seen before ``h w``) for every lower order; ``C_j(h)`` sums
``c_j(h ·)`` and ``N_j(h)`` counts the bytes ``w`` with ``c_j(h w) > 0``. The discount is
``D_j = n1 / (n1 + 2 n2)`` from the number of ``c_j`` equal to one and two (Ney, Essen &
Kneser 1994), or 0.75 when no count equals one (toy data only). Since ``D_j <= 1`` every
distribution sums to one, and since the uniform base gets weight ``D_0 > 0`` every byte
has a nonzero probability.

Counts live in sorted arrays of packed integer keys (a gram's bytes big-endian in an
int64, the predicted byte lowest), built with ``np.unique`` and looked up with
``np.searchsorted``. Results are cached in ``baselines.json`` under ``$MLM_CACHE_DIR``, else
``$XDG_CACHE_HOME/mlm``, else ``~/.cache/mlm``, keyed by the corpus sha256, its validation
fraction and the order.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlm import env
from mlm.data.corpus import Corpus
from mlm.data.split import SPLIT_RULES
from mlm.egg.data import resolve_data
from mlm.errors import MlmError

#: An order-k gram has k + 1 bytes; 7 bytes keep the packed key positive in an int64.
MAX_ORDER = 6
FALLBACK_DISCOUNT = 0.75
#: Part of the cache key: change it whenever the numbers this module computes would change.
METHOD = "interpolated-kneser-ney-v1"
ORDER_NAMES = {0: "unigram", 1: "bigram", 2: "trigram"}


def order_name(order: int) -> str:
    """``unigram``, ``bigram``, ``trigram``, then ``4-gram``, ``5-gram``, ..."""
    return ORDER_NAMES.get(order, f"{order + 1}-gram")


def gram_keys(data: np.ndarray, length: int) -> np.ndarray:
    """The packed key of every window of ``length`` bytes; key ``s`` is ``data[s : s + length]`` big-endian."""
    n = max(data.size - length + 1, 0)
    keys = np.zeros(n, dtype=np.int64)
    for m in range(length):
        keys <<= 8
        keys |= data[m : m + n]
    return keys


def _lookup(table: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``values[i]`` where ``table[i] == query`` (``table`` sorted), else 0."""
    index = np.minimum(np.searchsorted(table, query), table.size - 1)
    return np.where(table[index] == query, values[index], 0.0)


@dataclass(frozen=True)
class Level:
    """The counts of one order: grams ``h w`` with ``len(h) = j`` and their contexts ``h``."""

    keys: np.ndarray  # sorted packed keys of the grams h w
    counts: np.ndarray  # c_j(h w), float64
    contexts: np.ndarray  # sorted packed keys of the contexts h (key >> 8)
    totals: np.ndarray  # C_j(h)
    types: np.ndarray  # N_j(h)
    discount: float

    @classmethod
    def from_counts(cls, keys: np.ndarray, counts: np.ndarray) -> Level:
        """Build a level from sorted unique gram keys and their counts."""
        # Sorting by key sorts by context (the high bytes), so each context is one run.
        contexts, starts = np.unique(keys >> 8, return_index=True)
        n1, n2 = int(np.count_nonzero(counts == 1)), int(np.count_nonzero(counts == 2))
        return cls(keys=keys, counts=counts.astype(np.float64), contexts=contexts,
                   totals=np.add.reduceat(counts, starts).astype(np.float64),
                   types=np.diff(np.append(starts, keys.size)).astype(np.float64),
                   discount=n1 / (n1 + 2 * n2) if n1 else FALLBACK_DISCOUNT)

    def smooth(self, grams: np.ndarray, lower: np.ndarray) -> np.ndarray:
        """``p_j(w | h)`` for each packed gram ``h w``, given ``lower = p_{j-1}(w | h')`` for each."""
        d = self.discount
        count = _lookup(self.keys, self.counts, grams)
        total = _lookup(self.contexts, self.totals, grams >> 8)
        types = _lookup(self.contexts, self.types, grams >> 8)
        seen = total > 0
        mixed = (np.maximum(count - d, 0.0) + d * types * lower) / np.where(seen, total, 1.0)
        return np.where(seen, mixed, lower)


@dataclass(frozen=True)
class KneserNey:
    """An interpolated Kneser–Ney byte model conditioning on up to ``order`` previous bytes."""

    order: int
    levels: tuple[Level, ...]  # levels[j] conditions on j bytes

    @classmethod
    def fit(cls, train: np.ndarray, order: int) -> KneserNey:
        """Count the training bytes: raw counts for ``order``, continuation counts below it."""
        check_order(order)
        if train.size <= order:
            raise MlmError(f"the training split has {train.size} bytes, too few for an order-{order} "
                           "baseline: use a larger corpus or lower --orders")
        keys, counts = np.unique(gram_keys(train, order + 1), return_counts=True)
        levels = [Level.from_counts(keys, counts)]
        for j in range(order - 1, -1, -1):
            # Dropping the oldest byte of each distinct (j+2)-gram and counting the repeats gives,
            # for each (j+1)-gram, the number of distinct bytes seen before it.
            keys, counts = np.unique(keys & ((1 << (8 * (j + 1))) - 1), return_counts=True)
            levels.append(Level.from_counts(keys, counts))
        return cls(order=order, levels=tuple(reversed(levels)))

    def distribution(self, context: bytes) -> np.ndarray:
        """Probabilities of the 256 next bytes after ``context`` (only its last ``order`` bytes matter)."""
        p = np.full(256, 1.0 / 256)
        following = np.arange(256, dtype=np.int64)
        for j in range(min(self.order, len(context)) + 1):
            h = int.from_bytes(context[len(context) - j :], "big") if j else 0
            p = self.levels[j].smooth((h << 8) | following, p)
        return p

    def probabilities(self, data: np.ndarray) -> np.ndarray:
        """``p(data[i] | data[max(0, i - order) : i])`` for ``i = 1 .. n - 1``."""
        p = np.full(data.size, 1.0 / 256)
        for j, level in enumerate(self.levels):
            # Gram s ends at byte s + j; bytes before j keep their shorter-context probability.
            p[j:] = level.smooth(gram_keys(data, j + 1), p[j:])
        return p[1:]

    def bits_per_byte(self, data: np.ndarray) -> float:
        """Mean bits per predicted byte of ``data`` (``n - 1`` predictions, as ``eval`` counts)."""
        if data.size < 2:
            raise MlmError(f"{data.size} validation bytes: at least 2 are needed to predict one")
        return float(-np.log2(self.probabilities(data)).sum() / (data.size - 1))


def check_order(order: int) -> None:
    """Refuse orders the packed keys cannot hold."""
    if not 0 <= order <= MAX_ORDER:
        raise MlmError(f"baseline order must be between 0 and {MAX_ORDER} (got {order})")


def parse_orders(text: str) -> list[int]:
    """``"0,1,2,3"`` -> ``[0, 1, 2, 3]`` (sorted, duplicates dropped)."""
    try:
        orders = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise MlmError(f"--orders must be comma-separated integers such as 0,1,2,3 (got {text!r})") from None
    if not orders:
        raise MlmError("--orders is empty: give at least one order, e.g. --orders 2")
    for order in orders:
        check_order(order)
    return orders


def baseline_bpb(corpus: Corpus, orders: Iterable[int]) -> dict[int, float]:
    """Validation bits per byte of the order-k model fit on the training split, for each k."""
    return {order: KneserNey.fit(corpus.train, order).bits_per_byte(corpus.val) for order in orders}


def cache_path() -> Path:
    """``$MLM_CACHE_DIR/baselines.json``, else under ``$XDG_CACHE_HOME/mlm`` or ``~/.cache/mlm``."""
    if os.environ.get(env.CACHE_DIR):
        return Path(os.environ[env.CACHE_DIR]) / "baselines.json"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    root = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return root / "mlm" / "baselines.json"


def _read_cache(path: Path) -> dict:
    """The cache's contents; a missing, unreadable or corrupt cache is an empty one."""
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _write_cache(path: Path, cache: dict) -> None:
    """Replace the cache atomically; failing to write only costs a recomputation next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".baselines-", suffix=".tmp",
                                         delete=False, encoding="utf-8") as tmp:
            json.dump(cache, tmp, indent=1, sort_keys=True)
        os.replace(tmp.name, path)
    except OSError:
        return


def cached_baselines(corpus: Corpus, orders: Iterable[int]) -> dict[int, float]:
    """:func:`baseline_bpb`, computing only the orders not yet cached for this corpus."""
    orders = list(orders)
    path = cache_path()
    cache = _read_cache(path)
    key = f"{corpus.sha256}:val_fraction={corpus.val_fraction}:split={SPLIT_RULES}:{METHOD}"
    entry = cache.get(key)
    known = {k: v for k, v in entry.items() if isinstance(v, float)} if isinstance(entry, dict) else {}
    missing = [order for order in orders if str(order) not in known]
    if missing:
        known.update({str(order): bpb for order, bpb in baseline_bpb(corpus, missing).items()})
        cache[key] = known
        _write_cache(path, cache)
    return {order: known[str(order)] for order in orders}


@dataclass(frozen=True)
class BaselineReport:
    """What ``python -m mlm.egg baseline`` prints."""

    data: str
    val_bytes: int
    bpb: dict[int, float]
    seconds: float
    note: str | None

    def lines(self) -> str:
        return "\n".join(f"order {order} ({order_name(order)}) Kneser-Ney: {bpb:.6f} bits/byte"
                         for order, bpb in self.bpb.items())

    def to_json(self) -> str:
        return json.dumps({"data": self.data, "val_bytes": self.val_bytes,
                           "orders": {str(order): bpb for order, bpb in self.bpb.items()},
                           "seconds": self.seconds})


def baseline_report(data: Path | None, orders: list[int]) -> BaselineReport:
    """Load the corpus as ``train`` would and compute (or recall) its baselines."""
    start = time.monotonic()
    corpus, note = resolve_data(data)
    if corpus.val_bytes < 2:
        raise MlmError(f"the validation split of {corpus.path} has {corpus.val_bytes} bytes: "
                       "a baseline needs at least 2; use a larger corpus")
    bpb = cached_baselines(corpus, orders)
    return BaselineReport(str(corpus.path), corpus.val_bytes, bpb, time.monotonic() - start, note)
