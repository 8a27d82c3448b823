"""The throughput benchmark script runs and prints the documented JSON fields (no speed asserted)."""

import json
import os
import subprocess
import sys

from tests.helpers import REPO


def test_throughput_json_lines():
    proc = subprocess.run(
        [sys.executable, "benchmarks/throughput.py", "--models", "convmodel", "--batch", "8", "--size", "32",
         "--steps", "1", "--repeats", "3", "--no-compile", "--json"],
        cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][0])
    for key in ("model", "jax_img_s", "torch_img_s", "ratio", "device", "dtype", "batch"):
        assert key in row
    assert row["model"] == "convmodel" and row["batch"] == 8 and row["jax_img_s"] > 0
    assert abs(row["ratio"] - row["jax_img_s"] / row["torch_img_s"]) < 0.01 * row["ratio"] + 1e-3
    # with an odd number of interleaved rounds, the ratio of medians lies within the single rounds' ratios
    low, high = row["ratio_range"]
    assert row["rounds"] == 3 and low - 1e-3 <= row["ratio"] <= high + 1e-3
