"""The Engine's numpy views on the C core's buffers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import cli_env

# A model whose buffers are large enough for malloc to map them on their own, so that freeing the model
# unmaps them and a dangling view faults instead of reading stale bytes.
DROPPED_ENGINE = """
import gc
import numpy as np
from mlm.egg.config import preset
from mlm.egg.engine import Engine

engine = Engine(preset("small").replace(hidden=512, population=8, streams=4))
engine.init_weights(7)
expected = engine.weights.copy()
views = engine.weights, engine.state, engine.vote_memory, engine.weight_average
del engine
gc.collect()
churn = [np.ones(1 << 20, dtype=np.int8) for _ in range(64)]
views[0][:] = expected  # a write, then reads, through the views of a model no name refers to any more
assert np.array_equal(views[0], expected) and int(views[1].sum()) == 0
print("ok", views[2].size > 0, views[3].size > 0)
"""


def test_views_keep_their_model_alive(tmp_path: Path) -> None:
    """Before the views held their model, this script died of a segmentation fault."""
    result = subprocess.run([sys.executable, "-c", DROPPED_ENGINE], env=cli_env(), cwd=tmp_path, capture_output=True,
                            timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr.decode()[-2000:])
    assert result.stdout.decode().split() == ["ok", "True", "True"]
