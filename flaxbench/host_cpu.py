"""What this host's CPU is, as /proc/cpuinfo says (no JAX: the compilation cache asks before JAX starts)."""

from __future__ import annotations

import os
import platform


def cpuinfo_value(*keys: str) -> str | None:
    """The value of the first /proc/cpuinfo line that starts with one of `keys`; None where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            line = next((line for line in info if line.startswith(keys)), None)
    except OSError:
        return None
    return line.split(":", 1)[-1].strip() if line is not None else None


def describe_cpu() -> str:
    """This host's processor model and the cores this process may use, e.g. 'AMD EPYC 7B13 (2 cores)'."""
    model = cpuinfo_value("model name") or platform.processor() or "cpu"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} ({cores} cores)"
