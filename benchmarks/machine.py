"""What every benchmark records about the machine it ran on (no numpy, so it can be
imported before the thread settings are fixed)."""
from __future__ import annotations

import os
import platform


def all_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average():
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def describe(load_before) -> dict:
    """CPU, cores, memory, platform, Python and the load average before and now."""
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except OSError:
        mem = None
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_available": all_cores(),
        "memory_bytes": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
