"""The study-time benchmark rejects bad flags with one line before training anything."""

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.parametrize("flags, expected", [
    (["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["--extrapolate", "-3"], "argument --extrapolate: must be at least 1, got -3"),
    (["--rows", "resnet18,resnet34"], "--rows: resnet34 is not a study row"),
])
def test_bad_flags_are_one_line_errors(flags, expected):
    proc = subprocess.run([sys.executable, "benchmarks/study_time.py", *flags], cwd=REPO,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
