"""The environment variables mlm reads, each name defined here once; every one starts with ``MLM_``.

The one exception is ``EGG_RESUME_BEST``, the name users know from the reference trainer (egg.c),
kept as an alias of ``MLM_RESUME_BEST``. Variables owned by others (``CC``, ``XDG_CACHE_HOME``, the
MPI launchers' ``PMI_SIZE``...) keep their owners' names and are named where they are read.
"""

from __future__ import annotations

import os

#: Forces one SIMD kernel (``scalar``, ``avx2``...). Read by the C core when it loads (csrc/kernels.c,
#: which cannot import this module and spells the name once itself).
KERNEL = "MLM_KERNEL"
#: Folder for mlm's caches (the n-gram baselines); default ``$XDG_CACHE_HOME/mlm`` or ``~/.cache/mlm``.
CACHE_DIR = "MLM_CACHE_DIR"
#: ``1``: ``train`` resumes from ``egg.ckpt.best`` instead of the latest slot, like ``--resume best``.
RESUME_BEST = "MLM_RESUME_BEST"
#: The reference trainer's name for :data:`RESUME_BEST`, kept for the users who know it.
RESUME_BEST_ALIAS = "EGG_RESUME_BEST"
#: Seconds an MPI rank waits in the per-step exchange before it aborts the job (mlm/egg/distributed.py).
MPI_TIMEOUT = "MLM_MPI_TIMEOUT"
#: Test hook: ``N`` makes the N-th checkpoint file a process writes SIGKILL itself halfway through.
TEST_KILL_DURING_SAVE = "MLM_TEST_KILL_DURING_SAVE"
#: Test hook: ``R:S`` makes MPI rank R raise an exception at step S (see tests/test_mpi.py).
TEST_FAIL_AT = "MLM_TEST_FAIL_AT"


def resume_best_requested() -> bool:
    """Whether ``MLM_RESUME_BEST=1`` (or its alias ``EGG_RESUME_BEST=1``) asks ``train`` to resume from best."""
    return any(os.environ.get(name) == "1" for name in (RESUME_BEST, RESUME_BEST_ALIAS))
