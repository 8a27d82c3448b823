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
