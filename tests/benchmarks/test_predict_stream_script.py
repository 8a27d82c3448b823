"""The predict-stream benchmark times decoding, the model and their stream, and prints the documented fields."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


def test_predict_stream_json_lines():
    proc = subprocess.run(
        [sys.executable, "benchmarks/predict_stream.py", "--models", "convmodel", "--tiles", "31", "--size", "32",
         "--batch", "8", "--repeats", "1", "--format", "tif", "--json"],
        cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][0])
    assert row["model"] == "convmodel" and row["tiles"] == 31 and row["format"] == "tif"
    rates = [row[key] for key in ("decode_tiles_s", "model_tiles_s", "stream_tiles_s")]
    assert all(rate > 0 for rate in rates)
    assert abs(row["overlap"] - rates[2] / min(rates[:2])) < 0.01 * row["overlap"] + 1e-3


def test_unknown_rows_are_rejected_before_any_tile_is_written():
    proc = subprocess.run([sys.executable, "benchmarks/predict_stream.py", "--models", "resnet99"], cwd=REPO,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "resnet99 is not a study row" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("flags, expected", [
    (["--size", "4"], "error: --size 4 does not suit a row (convmodel: spec.data.image_size: convmodel needs tiles of "
                      "at least 8 px, got 4"),
    (["--tiles", "2", "--size", "32"], "error: --tiles 2 leaves a class folder empty; give at least 3, one tile for "
                                       "each of tumor, stroma, lympho"),
])
def test_a_size_or_tile_count_that_cannot_work_is_one_line_before_any_tile_is_written(flags, expected):
    proc = subprocess.run([sys.executable, "benchmarks/predict_stream.py", "--models", "convmodel", "--repeats", "1",
                           *flags], cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
