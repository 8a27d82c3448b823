"""gpu_session.sh: an unwritable OUT stops it at once; a phase skipped for lack of time is named and fails it."""

import os
import subprocess
import sys

from tests.helpers import REPO


def run_session(tmp_path, seconds: str, **env: str) -> subprocess.CompletedProcess:
    """gpu_session.sh with `env`, its benchmark scripts replaced by a python3 that only echoes their flags."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python3"
    fake.write_text('#!/bin/sh\ncase "$1" in benchmarks/*) echo "ran $*"; exit 0 ;; esac\n'
                    f'exec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    defaults = {"MODELS": "", "ROWS": "", "COMPILE_MODELS": "", "PLACEMENT_MODELS": "", "PREDICT_MODELS": ""}
    return subprocess.run(["bash", "benchmarks/gpu_session.sh", seconds], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "JAX_PLATFORMS": "cpu",
                               "OUT": str(tmp_path / "out"), **defaults, **env}, timeout=300)


def test_an_unwritable_out_is_one_line_before_anything_runs(tmp_path):
    (tmp_path / "a_file").write_text("")
    for out in ("/proc/nope", str(tmp_path / "a_file")):
        proc = run_session(tmp_path, "100", OUT=out, MODELS="convmodel")
        assert proc.returncode == 2 and proc.stdout == "", proc.stdout
        assert proc.stderr == f"gpu_session.sh: cannot create or write the output folder OUT='{out}'; set OUT to a " \
                              "writable folder\n"


def test_a_skipped_phase_is_named_and_fails_the_session_and_study_time_gets_tiles_and_size(tmp_path):
    proc = run_session(tmp_path, "100", ROWS="convmodel", COMPILE_MODELS="resnet50", SIZE="32", TILES="64")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    study_time = "ran benchmarks/study_time.py --rows convmodel --epochs 1 --extrapolate 30 --tiles 64 --size 32"
    assert study_time in proc.stdout
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("== torch_compile: skipped")]
    assert len(skipped) == 1 and skipped[0].endswith(" s left, needs 150 s"), proc.stdout
    assert proc.stdout.rstrip().endswith("failed or cut off: torch_compile")
