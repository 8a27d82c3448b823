"""The loading benchmark times every split and one split alone, each in a process of its own."""

import json
import os
import subprocess
import sys

from tests.data_pipeline.helpers import write_tiles
from tests.helpers import REPO


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/load_tiles.py", *args], cwd=REPO,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=600)


def test_load_tiles_json_lines(tmp_path):
    write_tiles(tmp_path / "tiles", {"a": 6, "b": 6}, size=16)
    proc = run_script("--data", f"source=folder:{tmp_path / 'tiles'}", "--data", "classes=None",
                      "--data", "split=(6,3,3)", "--data", "image_size=None", "--split", "val", "--repeats", "1",
                      "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [(row["load"], row["tiles"]) for row in rows] == [("all splits", 12), ("val alone", 3)]
    for row in rows:
        assert row["source"] == f"folder:{tmp_path / 'tiles'}" and row["image_size"] == [16, 16]
        assert row["seconds"] > 0 and row["peak_gb"] > 0 and row["seconds_range"] == [row["seconds"]] * 2


def test_a_key_spec_data_lacks_is_one_line():
    proc = run_script("--data", "sauce=folder:/x", "--repeats", "1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("load_tiles: loading failed: ValueError: --data sauce: "
                                                            "spec.data has no such key")
