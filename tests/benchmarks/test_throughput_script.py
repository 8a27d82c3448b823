"""The throughput benchmark script runs and prints the documented JSON fields (no speed asserted)."""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO


def test_throughput_json_lines_with_flaxbench_on_one_device_as_torch():
    two_devices = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run(
        [sys.executable, "benchmarks/throughput.py", "--models", "convmodel", "--batch", "8", "--size", "32",
         "--steps", "1", "--repeats", "3", "--no-compile", "--json"],
        cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu", **two_devices}, capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][0])
    for key in ("model", "jax_img_s", "torch_img_s", "ratio", "device", "dtype", "batch"):
        assert key in row
    assert row["model"] == "convmodel" and row["batch"] == 8 and row["jax_img_s"] > 0
    assert row["device"].startswith("cpu: ") and row["device"].endswith(" x1")  # the torch twin trains on one
    assert abs(row["ratio"] - row["jax_img_s"] / row["torch_img_s"]) < 0.01 * row["ratio"] + 1e-3
    # with an odd number of interleaved rounds, the ratio of medians lies within the single rounds' ratios
    low, high = row["ratio_range"]
    assert row["rounds"] == 3 and low - 1e-3 <= row["ratio"] <= high + 1e-3
    # a row read alone says how it was timed, and the load on the machine before and after
    assert row["steps"] == 1 and row["repeats"] == 3
    assert row["busy_cores_at_start"] >= 0 and row["busy_cores_after"] >= 0


def _load_throughput_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("throughput_script", REPO / "benchmarks" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bad_counts_and_unknown_rows_are_rejected_before_timing():
    for flags, expected in ((["--repeats", "0"], "argument --repeats: must be at least 1"),
                            (["--steps", "-1"], "argument --steps: must be at least 1"),
                            (["--models", "convmodel,resnet99"], "resnet99 is not a study row")):
        proc = subprocess.run([sys.executable, "benchmarks/throughput.py", *flags], cwd=REPO,
                              env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and expected in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr


def test_a_failing_optional_contender_is_dropped_and_the_others_keep_their_rounds(capsys):
    throughput = _load_throughput_module()
    calls = {"compile": 0}

    def flaky_compile() -> float:
        calls["compile"] += 1
        if calls["compile"] == 2:
            raise RuntimeError("inductor failed")
        return 0.5

    timers = {"jax": lambda: 1.0, "torch": lambda: 2.0, "torch_compile": flaky_compile}
    times = throughput.interleaved_times(timers, 4, optional=frozenset({"torch_compile"}))
    assert set(times) == {"jax", "torch"} and times["jax"] == [1.0] * 4 and times["torch"] == [2.0] * 4
    assert "torch_compile: dropped" in capsys.readouterr().err

    def broken_jax() -> float:
        raise RuntimeError("jax failed")

    with pytest.raises(RuntimeError, match="jax failed"):  # a required contender's failure propagates
        throughput.interleaved_times({"jax": broken_jax, "torch": lambda: 2.0}, 2, optional=frozenset({"torch_compile"}))


def test_only_the_call_after_the_settling_calls_is_timed():
    throughput = _load_throughput_module()
    calls = {"jax": 0, "torch": 0}

    def counting(name: str):
        def timer() -> float:
            calls[name] += 1
            return float(calls[name])  # "seconds" = which call of this contender it was
        return timer

    times = throughput.interleaved_times({"jax": counting("jax"), "torch": counting("torch")}, 3, settle=2)
    assert times == {"jax": [3.0, 6.0, 9.0], "torch": [3.0, 6.0, 9.0]}
    calls.update(jax=0, torch=0)
    assert throughput.interleaved_times({"jax": counting("jax"), "torch": counting("torch")}, 2, settle=0) == {
        "jax": [1.0, 2.0], "torch": [1.0, 2.0]}


def test_a_failing_model_makes_the_exit_status_non_zero_and_names_the_size_flag():
    # 32 px is not a multiple of ViT patch 15: the row fails while being built.
    proc = subprocess.run([sys.executable, "benchmarks/throughput.py", "--models", "vit_p15", "--batch", "2",
                           "--size", "32", "--steps", "1", "--repeats", "1", "--no-compile", "--json"],
                          cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "vit_p15: failed" in proc.stderr and "--size" in proc.stderr
    assert "throughput: 1 model(s) failed: vit_p15" in proc.stderr and proc.stdout == ""


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat")
def test_busy_cores_sees_a_process_spinning_on_a_core():
    throughput = _load_throughput_module()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = throughput.busy_cores(1.0)
    finally:
        spinner.kill()
        spinner.wait()
    assert 0.8 <= busy <= (os.cpu_count() or 1) + 0.01


def test_load_is_warned_about_only_when_more_than_half_the_cores_are_busy(monkeypatch, capsys):
    from benchmarks import machine_load

    monkeypatch.setattr(machine_load.os, "cpu_count", lambda: 2)
    assert machine_load.warn_if_busy(1.6, "right after timing resnet18", "the ratios lean toward flaxbench")
    err = capsys.readouterr().err
    assert err.startswith("warning: the machine was busy right after timing resnet18 (1.6 of 2 cores in use")
    assert "the ratios lean toward flaxbench" in err and len(err.splitlines()) == 1
    assert not machine_load.warn_if_busy(0.9, "at the start", "x") and capsys.readouterr().err == ""
