"""Load from other processes on this machine, sampled before and after a benchmark's timing."""

from __future__ import annotations

import os
import sys
import time


def busy_cores(window_s: float = 1.0) -> float:
    """How many cores other processes kept busy over the last `window_s` seconds (Linux), else the 1-minute load.

    The load average still counts a benchmark run that has just ended, so back-to-back runs would
    warn about their own predecessor; /proc/stat sampled now does not.
    """
    def cpu_times() -> list[int]:
        with open("/proc/stat") as stat:
            return [int(field) for field in stat.readline().split()[1:]]

    try:
        before = cpu_times()
        time.sleep(window_s)
        after = cpu_times()
    except (OSError, ValueError):
        return os.getloadavg()[0]
    delta = [b - a for a, b in zip(before, after)]
    idle = delta[3] + (delta[4] if len(delta) > 4 else 0)  # idle + iowait
    return (os.cpu_count() or 1) * (1 - idle / max(sum(delta), 1))


def is_busy(load: float) -> bool:
    """Whether `load` (busy cores) is more than half of this machine's cores."""
    return load > 0.5 * (os.cpu_count() or 1)


def warn_if_busy(load: float, when: str, consequence: str) -> bool:
    """Print a warning on stderr if `load` is busy; `when` says when it was sampled. Returns whether it warned."""
    if not is_busy(load):
        return False
    print(f"warning: the machine was busy {when} ({load:.1f} of {os.cpu_count()} cores in use by other processes); "
          f"{consequence}: measure on an otherwise idle machine", file=sys.stderr, flush=True)
    return True
