"""How a run names the devices it was timed on."""

from __future__ import annotations

import os
import re

import pytest

from flaxbench.runtime import describe_devices, make_mesh
from tests.helpers import tiny_spec


def test_a_cpu_is_named_by_its_model_and_cores():
    described = describe_devices(make_mesh(tiny_spec().mesh, 8))
    match = re.fullmatch(r"cpu: (.+) \((\d+) cores\) x1", described)
    assert match, described
    assert int(match.group(2)) == len(os.sched_getaffinity(0))
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            model = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pytest.skip("this machine's /proc/cpuinfo names no CPU model")
    assert match.group(1) == model


def test_a_run_names_the_commit_of_the_checkout_it_ran_from(tmp_path):
    import shutil
    import subprocess
    import sys

    from flaxbench import __version__
    from flaxbench.runtime import flaxbench_version
    from tests.helpers import REPO

    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert re.fullmatch(re.escape(f"{__version__}+g{head}") + r"(\.dirty)?", flaxbench_version())
    shutil.copytree(REPO / "flaxbench", tmp_path / "flaxbench")  # installed, as a wheel is: no checkout around it
    shutil.copytree(REPO / "data_pipeline", tmp_path / "data_pipeline")
    copied = subprocess.run([sys.executable, "-c", "from flaxbench.runtime import flaxbench_version as v; print(v())"],
                            cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert copied.stdout.strip() == __version__, copied.stderr
