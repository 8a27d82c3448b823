"""The step profiler finds the compiled step's ops in the trace and rejects unknown rows clearly."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def test_profile_lists_the_steps_ops():
    proc = subprocess.run(
        [sys.executable, "benchmarks/profile_step.py", "--model", "convmodel", "--batch", "4", "--size", "32",
         "--steps", "1", "--json"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][0])
    assert result["model"] == "convmodel" and result["wall_ms_per_step"] > 0
    ops = result["ops"]
    assert ops and all(op["ms_per_step"] >= 0 and op["calls_per_step"] > 0 for op in ops)
    assert abs(sum(op["ms_per_step"] for op in ops) - result["op_ms_per_step"]) < 1e-6 * result["op_ms_per_step"] + 1e-9
    assert [op["ms_per_step"] for op in ops] == sorted((op["ms_per_step"] for op in ops), reverse=True)
    # a training step: forward ops and their gradients (JAX's transpose of jvp) both show up
    sources = " ".join(op["source"] for op in ops)
    assert "transpose(jvp" in sources and "jvp(" in sources


def test_text_table_with_the_torch_twin():
    proc = subprocess.run(
        [sys.executable, "benchmarks/profile_step.py", "--model", "convmodel", "--batch", "4", "--size", "32",
         "--steps", "1", "--top", "5", "--torch"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["ms/step", "%ops", "calls"])
    assert all(float(line.split()[0]) >= 0 for line in lines[header + 1 : header + 6])
    assert "aten::" in proc.stdout and "Self CPU" in proc.stdout
    assert lines[0].startswith("convmodel on cpu: ") and "(cpu)" not in lines[0]
    torch_line = next(line for line in lines if line.startswith("torch twin on cpu: "))
    assert " ms per step profiled; " in torch_line and torch_line.endswith("totals over all 1 step, not per step")


def test_unknown_model_is_a_one_line_error():
    # specs/pretrained.py exists but is a helper, not a study row.
    for model in ("resnet_999", "pretrained"):
        proc = subprocess.run(
            [sys.executable, "benchmarks/profile_step.py", "--model", model],
            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 2
        assert f"--model: {model} is not a study row" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("model, size, expected", [
    ("vit_p15", "32", "profile_step: vit_p15 failed: SpecError: ViT image_size 32 is not a multiple of patch_size 15"),
    ("convmodel", "4", "profile_step: convmodel failed: SpecError: spec.data.image_size: convmodel needs tiles of at "
                       "least 8 px, got 4"),
])
def test_a_size_the_model_refuses_is_one_line(model, size, expected):
    proc = subprocess.run([sys.executable, "benchmarks/profile_step.py", "--model", model, "--batch", "2",
                           "--size", size, "--steps", "1"], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(expected) and line.endswith("(this script's tile size is --size)")


def test_a_trace_dir_that_cannot_be_written_is_refused_before_anything_is_built(tmp_path):
    (tmp_path / "a_file").write_text("")
    for trace_dir, why in (("/proc/nope", "No such file or directory"), (tmp_path / "a_file", "it is a file")):
        proc = subprocess.run([sys.executable, "benchmarks/profile_step.py", "--model", "convmodel", "--size", "16",
                               "--trace-dir", str(trace_dir)], cwd=REPO, env=ENV, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert f"error: --trace-dir {trace_dir}: cannot create or write a folder there ({why}" in proc.stderr
