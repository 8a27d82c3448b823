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


def start_processes(workdir: Path, *extra: str, count: int = 2,
                    own: dict[int, tuple[str, ...]] | None = None) -> list[subprocess.Popen]:
    """`count` processes of one `--distributed` run over `workdir`, two CPU devices each; `own` adds arguments
    to some processes alone."""
    port = free_port()
    procs = []
    for index in range(count):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
               "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": str(count),
               "JAX_PROCESS_ID": str(index)}
        procs.append(subprocess.Popen([sys.executable, "-m", "flaxbench", "--distributed", *ARGS, *extra,
                                       *(own or {}).get(index, ()), f"--workdir={workdir}"], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
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
    assert [(start["num_devices"], start["num_processes"]) for start in results["device_starts"]] == [(4, 2)]
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


def test_processes_of_different_specs_stop_at_once_naming_the_key(tmp_path):
    procs = start_processes(tmp_path / "run", own={1: ("--spec.train.epochs=3",)})
    for code, _, err in finish(procs, timeout=120):  # before: both trained, then waited for each other for ever
        assert code == 2 and "Traceback" not in err, err[-2000:]
        assert "the processes of this run differ" in err and "spec.train.epochs=" in err.splitlines()[-1], err
    assert not (tmp_path / "run").exists()


def test_a_mesh_leaving_out_some_processes_devices_is_one_line(tmp_path):
    for code, _, err in finish(start_processes(tmp_path / "run", "--spec.mesh.data=2"), timeout=120):
        assert code == 2 and "Traceback" not in err, err[-2000:]
        assert "spec.mesh.data=2: a run of 2 processes trains on every device of each, 4 here" in err, err


def test_distributed_set_up_mistakes_are_one_line(tmp_path):
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_"))}
    unset = subprocess.run([sys.executable, "-m", "flaxbench", "--distributed", *ARGS, f"--workdir={tmp_path}"],
                           cwd=REPO, env={**env, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=120)
    assert unset.returncode == 2 and "Traceback" not in unset.stderr, unset.stderr[-2000:]
    assert "JAX_COORDINATOR_ADDRESS is not set and this is no SLURM job" in unset.stderr.splitlines()[-1]
    beyond = subprocess.run([sys.executable, "-m", "flaxbench", "--distributed", *ARGS, f"--workdir={tmp_path}"],
                            cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**env, "JAX_PLATFORMS": "cpu", "JAX_COORDINATOR_ADDRESS": f"localhost:{free_port()}",
                                 "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"})
    assert beyond.returncode == 2 and "Traceback" not in beyond.stderr, beyond.stderr[-2000:]
    assert "process_id < num_processes" in beyond.stderr.splitlines()[-1]
    predicted = run_cli("predict", "--distributed", f"--workdir={tmp_path}", str(tmp_path))
    assert predicted.returncode == 2 and "predict does not take --distributed" in predicted.stderr

