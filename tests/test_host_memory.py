"""Entry points restart once with glibc's malloc asking for transparent huge pages."""

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

PRINT_TUNABLES = ("from flaxbench.host_memory import restart_with_huge_pages; "
                  "print('started', flush=True); restart_with_huge_pages(); "
                  "import os; print(os.environ.get('GLIBC_TUNABLES'))")


def _glibc_linux() -> bool:
    try:
        return sys.platform.startswith("linux") and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):
        return False


def _run(tunables: str | None) -> list[str]:
    env = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    if tunables is not None:
        env["GLIBC_TUNABLES"] = tunables
    proc = subprocess.run([sys.executable, "-c", PRINT_TUNABLES], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.mark.skipif(not _glibc_linux(), reason="the tunable is glibc's")
def test_the_process_restarts_once_with_the_tunable_and_keeps_other_tunables():
    # 'started' twice: the first start, then the restarted process, which does not restart again.
    assert _run(None) == ["started", "started", "glibc.malloc.hugetlb=1"]
    assert _run("glibc.malloc.arena_max=2") == ["started", "started", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"]


@pytest.mark.skipif(not _glibc_linux(), reason="the tunable is glibc's")
def test_a_tunable_chosen_by_the_user_is_left_alone():
    assert _run("glibc.malloc.hugetlb=0") == ["started", "glibc.malloc.hugetlb=0"]
