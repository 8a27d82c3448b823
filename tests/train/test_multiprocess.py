"""Multi-process runs (two local processes joined by `--distributed`, two CPU devices each).

They stand in for two hosts sharing a filesystem: the same training as one process with the
same four devices, one set of outputs, checkpoints that resume, and a stop request that reaches
every process.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flaxbench.host_cpu import describe_cpu
from tests.helpers import REPO, run_cli
from tests.train.test_resume import comparable, wait_for_epoch

ARGS = [
    "--spec=specs/demo.py", "--spec.data.synthetic_per_class=24", "--spec.data.image_size=32",
    "--spec.data.split=(72,36,36)", "--spec.train.epochs=4", "--spec.train.batch_size=8",
    "--spec.mesh.data=-1",
]
# One process with four devices and two processes with two each reduce float32 sums in a
# different order (gloo between the processes), so losses agree to rounding, not bit for bit.
LOSS_RTOL = 1e-4
FOUR_CPU_DEVICES = f"cpu: {describe_cpu()} x4"  # results.json's `device` of every run here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_processes(workdir: Path, *extra: str, count: int = 2) -> list[subprocess.Popen]:
    """`count` processes of one `--distributed` run over `workdir`, two CPU devices each."""
    port = free_port()
    procs = []
    for index in range(count):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
               "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": str(count),
               "JAX_PROCESS_ID": str(index)}
        procs.append(subprocess.Popen([sys.executable, "-m", "flaxbench", "--distributed", *ARGS, *extra,
                                       f"--workdir={workdir}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = 400) -> list[tuple[int, str, str]]:
    """(returncode, stdout, stderr) of each process; all are killed if one outlives `timeout`."""
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            outputs.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return outputs


def assert_same_training(a: dict, b: dict) -> None:
    """Same epochs, losses equal to rounding, accuracies within one tile of each other."""
    assert len(a["history"]) == len(b["history"])
    for x, y in zip(a["history"], b["history"]):
        for key in ("train_loss", "val_loss"):
            assert x[key] == pytest.approx(y[key], rel=LOSS_RTOL), (key, x["epoch"])
    assert a["test_loss"] == pytest.approx(b["test_loss"], rel=LOSS_RTOL)
    assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 1 / 36 + 1e-9


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("two_processes")
    outputs = finish(start_processes(workdir))
    for returncode, _, err in outputs:
        assert returncode == 0, err[-3000:]
    return workdir, outputs


def test_two_processes_train_as_one_process_with_the_same_devices(two_processes, tmp_path):
    workdir, outputs = two_processes
    one = run_cli(*ARGS, f"--workdir={tmp_path}", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert one.returncode == 0, one.stderr
    results = json.loads((workdir / "results.json").read_text())
    assert results["device"] == json.loads((tmp_path / "results.json").read_text())["device"] == FOUR_CPU_DEVICES
    assert_same_training(results, json.loads((tmp_path / "results.json").read_text()))
    # one writer per output: a single set of TensorBoard events, and both processes agree
    assert len(list((workdir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    metrics = [out.strip().splitlines()[-1].split("; train")[0] for _, out, _ in outputs]  # time is per process
    assert metrics[0] == metrics[1]


def test_sigterm_to_one_process_stops_all_after_one_epoch_and_resumes(two_processes, tmp_path):
    procs = start_processes(tmp_path)
    wait_for_epoch(tmp_path, procs[0], 1)
    procs[1].send_signal(signal.SIGTERM)
    outputs = finish(procs)
    assert [code for code, _, _ in outputs] == [143, 143], [err[-2000:] for _, _, err in outputs]
    stopped_after = {err.strip().splitlines()[-1].split(" after epoch ")[1].split(";")[0] for _, _, err in outputs}
    assert len(stopped_after) == 1, outputs
    assert not (tmp_path / "results.json").exists()
    resumed = finish(start_processes(tmp_path))
    assert [code for code, _, _ in resumed] == [0, 0], [err[-2000:] for _, _, err in resumed]
    assert "resuming" in resumed[0][1]
    expected = json.loads((two_processes[0] / "results.json").read_text())
    assert comparable(json.loads((tmp_path / "results.json").read_text())) == comparable(expected)


def test_overwrite_with_two_processes_replaces_a_finished_run(two_processes, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(two_processes[0], workdir)
    finished = json.loads((workdir / "results.json").read_text())
    again = finish(start_processes(workdir, "--overwrite"))
    assert [code for code, _, _ in again] == [0, 0], [err[-2000:] for _, _, err in again]
    results = json.loads((workdir / "results.json").read_text())
    assert results["created"] != finished["created"] or results["train_time_s"] != finished["train_time_s"]
    assert comparable(results) == comparable(finished)


def test_two_processes_fed_from_host_memory_train_as_with_the_tiles_on_device(two_processes, tmp_path):
    outputs = finish(start_processes(tmp_path, "--spec.train.data_placement=host"))
    for returncode, _, err in outputs:
        assert returncode == 0, err[-3000:]
    host = json.loads((tmp_path / "results.json").read_text())
    assert host["data_placement"] == "host" and host["device"] == FOUR_CPU_DEVICES
    assert_same_training(host, json.loads((two_processes[0] / "results.json").read_text()))
