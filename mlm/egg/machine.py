"""Facts about this build and machine, for `python -m mlm.egg info` and experiment logs."""

from __future__ import annotations

import platform
import subprocess
import sys

from mlm import __version__
from mlm.egg import engine
from mlm.egg.core import ffi, lib


def cpu_name() -> str:
    """The CPU's model name where the OS states it cheaply, else the architecture."""
    if sys.platform == "darwin":
        result = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, str]:
    """Version, platform, compiler, kernels and parallel backend, as display strings."""
    available = engine.available_kernels()
    info = {
        "mlm": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu": cpu_name(),
        "compiler": ffi.string(lib.egg_compiler()).decode(),
        "kernel": engine.kernel_name(),
        "kernels available": ", ".join(available),
    }
    if "neon" in available:
        # One "neon" kernel multiplies with sdot or, on CPUs without dotprod, smull.
        info["neon dotprod"] = "yes" if lib.egg_neon_dotprod() else "no"
    info["parallel"] = engine.parallel_backend()
    info["threads"] = str(engine.max_threads())
    return info
