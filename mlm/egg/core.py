"""The compiled C core: its cffi ``ffi`` and ``lib``, for the modules that talk to it.

Kept apart from :mod:`mlm.egg.engine` so that :mod:`mlm.egg.config` can read the constants the core
publishes (``lib.EGG_...``, the enum in ``csrc/egg.h``) and check its own fields against
``egg_config`` without an import cycle.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from types import ModuleType

from mlm.errors import MlmError


def _installed_core() -> ModuleType:
    """The compiled core of the installed mlm.

    Running ``python -m mlm.egg`` inside a source checkout imports ``./mlm``,
    which has no compiled core after ``pip install .``; then the installed
    build of the same package is used.
    """
    try:
        from mlm.egg import _core

        return _core
    except ImportError:
        pass
    # Several "mlm" distributions may be visible: the build's own mlm.egg-info in the checkout comes first.
    files = [f for dist in importlib.metadata.distributions(name="mlm") for f in dist.files or []]
    for file in files:
        if (file.parent.as_posix() == "mlm/egg" and file.name.startswith("_core.") and file.suffix in (".so", ".pyd")
                and file.locate().exists()):
            spec = importlib.util.spec_from_file_location("mlm.egg._core", file.locate())
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules["mlm.egg._core"] = module
            return module
    raise MlmError("the C core of mlm is not built: run `pip install .` (or `python mlm/egg/_build.py` "
                   "to build it inside this checkout)")


#: The loaded extension module (its ``__file__`` says which build runs).
module = _installed_core()
ffi, lib = module.ffi, module.lib
