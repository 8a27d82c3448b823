"""The study-time benchmark: bad flags are one line before training anything; rows that read alone."""

import argparse
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.parametrize("flags, expected", [
    (["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["--extrapolate", "-3"], "argument --extrapolate: must be at least 1, got -3"),
    (["--rows", "resnet18,resnet34"], "--rows: resnet34 is not a study row"),
    (["--rows", "convmodel", "--tiles", "8"], "--tiles 8 is fewer than one training batch of the rows (64)"),
])
def test_bad_flags_are_one_line_errors(flags, expected):
    proc = subprocess.run([sys.executable, "benchmarks/study_time.py", *flags], cwd=REPO,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_an_extrapolated_json_row_keeps_what_was_measured():
    proc = subprocess.run([sys.executable, "benchmarks/study_time.py", "--rows", "convmodel", "--epochs", "1",
                           "--extrapolate", "30", "--tiles", "64", "--size", "32", "--json"], cwd=REPO,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][0])
    assert row["epochs"] == 30 and row["extrapolated"] and row["timed_epochs"] == 1
    assert abs(row["train_time_s"] - 30 * row["measured_train_s"]) <= 0.01 * 30 + 0.01
    assert (row["tiles"], row["size"]) == (64, 32) and row["study_s"] is None  # not the study's data: no comparison
    assert row["busy_cores_at_start"] >= 0 and row["busy_cores_after"] >= 0
    assert "warmup_epochs" not in proc.stderr  # timing one epoch: the warm-up warning is expected, so not shown


def _study_time_module():
    spec = importlib.util.spec_from_file_location("study_time_script", REPO / "benchmarks" / "study_time.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_compares_with_the_study_only_on_study_shaped_data(capsys):
    study_time = _study_time_module()
    row = {"row": "convmodel", "train_time_s": 26.4, "compile_time_s": 5.0, "images_per_second": 2900.0,
           "study_s": 52.8, "device": "gpu", "dtype": "bfloat16", "epochs": 30}
    args = argparse.Namespace(epochs=1, extrapolate=30, tiles=2550, size=150)
    study_time.print_table([row], args, 26.4, 5.0)
    out = capsys.readouterr().out
    assert "(extrapolated from 1 epoch)" in out and "2x" in out.splitlines()[2]
    args = argparse.Namespace(epochs=2, extrapolate=None, tiles=64, size=32)
    study_time.print_table([{**row, "study_s": None, "epochs": 2}], args, 26.4, 5.0)
    out = capsys.readouterr().out
    assert "64 training tiles of 32 px, not the study's" in out and "x" not in out.splitlines()[2][18:]
