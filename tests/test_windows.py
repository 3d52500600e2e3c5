"""The training windows: each step's are the slices the WindowSampler docstring defines, on any data size."""

from __future__ import annotations

import numpy as np
import pytest

from mlm.egg.data import WindowSampler


@pytest.mark.parametrize(("size", "streams", "seq_len"), [(1000, 7, 16), (17, 3, 16), (64, 64, 1), (5000, 512, 4)])
def test_windows_are_each_streams_slice_and_wrap_around(size: int, streams: int, seq_len: int) -> None:
    train = np.frombuffer(np.random.default_rng(size).bytes(size), np.uint8)
    sampler = WindowSampler(train, streams, seq_len)
    for step in (0, 1, 2, 37, 10_001):
        got = sampler.windows(step)
        assert got.shape == (streams, seq_len + 1) and got.dtype == np.uint8
        for s in range(streams):
            start = (s * sampler.span // streams + step * seq_len) % sampler.span
            assert bytes(got[s]) == train[start : start + seq_len + 1].tobytes()
