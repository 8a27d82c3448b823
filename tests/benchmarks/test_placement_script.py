"""The placement benchmark times both placements and prints the documented JSON fields (no speed asserted)."""

import json
import os
import subprocess
import sys

from tests.helpers import REPO


def test_placement_json_lines_on_all_local_devices():
    two_devices = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run(
        [sys.executable, "benchmarks/placement.py", "--models", "convmodel", "--batch", "8", "--size", "32",
         "--steps", "1", "--repeats", "3", "--settle", "0", "--json"],
        cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu", **two_devices}, capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][0])
    assert row["model"] == "convmodel" and row["batch"] == 8 and row["rounds"] == 3
    assert row["device_img_s"] > 0 and row["host_img_s"] > 0
    assert row["device"].startswith("cpu: ") and row["device"].endswith(" x2")  # as a run trains by default
    assert abs(row["ratio"] - row["host_img_s"] / row["device_img_s"]) < 0.01 * row["ratio"] + 1e-3
    low, high = row["ratio_range"]  # an odd number of rounds: the ratio of medians lies within the rounds' ratios
    assert low - 1e-3 <= row["ratio"] <= high + 1e-3


def test_unknown_rows_are_rejected_before_timing():
    proc = subprocess.run([sys.executable, "benchmarks/placement.py", "--models", "convmodel,resnet99"], cwd=REPO,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "resnet99 is not a study row" in proc.stderr and "Traceback" not in proc.stderr
