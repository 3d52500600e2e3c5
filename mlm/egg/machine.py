"""Facts about this build and machine, for `python -m mlm.egg info` and experiment logs."""

from __future__ import annotations

import os
import platform
import sysconfig

from mlm import __version__
from mlm.egg import engine


def machine_info() -> dict[str, str]:
    """Version, platform, compiler, kernels and parallel backend, as display strings."""
    return {
        "mlm": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "compiler": sysconfig.get_config_var("CC") or "unknown",
        "kernel": engine.kernel_name(),
        "kernels available": ", ".join(engine.available_kernels()),
        "parallel": engine.parallel_backend(),
        "threads": f"{engine.max_threads()} available (os.cpu_count()={os.cpu_count()})",
    }
