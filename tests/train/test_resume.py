"""Interruption and reproducibility: SIGKILL/SIGINT and resume, determinism, damaged checkpoints."""

import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flaxbench.checkpoints import BEST, LAST, RunCheckpoints
from flaxbench.errors import WorkdirError
from flaxbench.train.loop import train_and_evaluate
from flaxbench.train.setup import build_run
from tests.helpers import REPO, run_cli, tiny_spec

ARGS = [
    "--spec=specs/demo.py", "--spec.data.synthetic_per_class=24", "--spec.data.image_size=32",
    "--spec.data.split=(72,36,36)", "--spec.train.epochs=5", "--spec.train.batch_size=8",
    "--spec.mesh.data=1",
]
TIMING_KEYS = {"train_time_s", "compile_time_s", "checkpoint_time_s", "data_load_time_s", "images_per_second",
               "accuracy_per_second", "loss_per_second", "created", "epoch_time_s"}


def comparable(results: dict) -> dict:
    """results.json without timings (which differ run to run) and its starts (a resumed run has more)."""
    out = {k: v for k, v in results.items() if k not in TIMING_KEYS | {"device_starts"}}
    out["history"] = [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in results["history"]]
    return out


def start(workdir: Path) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-m", "flaxbench", *ARGS, f"--workdir={workdir}"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epoch(workdir: Path, proc: subprocess.Popen, epoch: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    target = workdir / "checkpoints" / LAST / str(epoch)
    while not (target / "_CHECKPOINT_METADATA").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    proc = run_cli(*ARGS, f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr
    return json.loads((workdir / "results.json").read_text())


def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path, uninterrupted):
    proc = start(tmp_path)
    wait_for_epoch(tmp_path, proc, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "results.json").exists()
    resumed = run_cli(*ARGS, f"--workdir={tmp_path}")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert comparable(results) == comparable(uninterrupted)
    assert uninterrupted["device_starts"] == [{"first_epoch": 1, "device": results["device"], "num_devices": 1,
                                               "num_processes": 1, "flaxbench_version": results["flaxbench_version"]}]
    first, resumed_at = results["device_starts"]  # the resume is recorded, on the same device
    assert first == uninterrupted["device_starts"][0] and resumed_at["device"] == results["device"]
    assert resumed_at["first_epoch"] >= 3


def test_sigint_saves_exits_cleanly_and_resumes(tmp_path, uninterrupted):
    proc = start(tmp_path)
    wait_for_epoch(tmp_path, proc, 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Resume with" in err.strip().splitlines()[-1]
    hint = err.strip().splitlines()[-1].split("Resume with: ", 1)[1]
    assert shlex.split(hint) == ["python", "-m", "flaxbench", *ARGS, f"--workdir={tmp_path}"]  # pastes into a shell
    assert RunCheckpoints(tmp_path / "checkpoints").epochs(LAST)
    resumed = run_cli(*ARGS, f"--workdir={tmp_path}")
    assert resumed.returncode == 0, resumed.stderr
    assert comparable(json.loads((tmp_path / "results.json").read_text())) == comparable(uninterrupted)


def test_two_runs_with_one_seed_agree(tmp_path):
    a = train_and_evaluate(tiny_spec(**{"train.epochs": 2}), tmp_path / "a", log=lambda s: None)
    b = train_and_evaluate(tiny_spec(**{"train.epochs": 2}), tmp_path / "b", log=lambda s: None)
    assert comparable(a) == comparable(b)


def test_truncated_latest_checkpoint_falls_back_to_previous(tmp_path, caplog):
    spec = tiny_spec(**{"train.epochs": 3})
    train_and_evaluate(spec, tmp_path, log=lambda s: None)
    ckpts = RunCheckpoints(tmp_path / "checkpoints")
    assert ckpts.epochs(LAST) == [2, 3]
    for f in (tmp_path / "checkpoints" / LAST / "3" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    template = build_run(spec).initial_state()
    with caplog.at_level(logging.WARNING):
        state, meta, epoch = ckpts.restore(LAST, template)
    assert epoch == 2 and meta["epoch"] == 2
    assert "unreadable" in caplog.text and str(tmp_path / "checkpoints" / LAST / "3") in caplog.text


@pytest.mark.parametrize("saved", [BEST, LAST])
def test_a_run_stopped_between_an_epochs_two_saves_resumes_to_the_same_results(tmp_path, saved):
    spec = tiny_spec(**{"train.epochs": 3})
    straight = train_and_evaluate(spec, tmp_path / "straight", log=lambda s: None)
    assert straight["evaluated_checkpoint"]["epoch"] == 3  # the last epoch is the best: saved twice
    stopped = tmp_path / "stopped"
    shutil.copytree(tmp_path / "straight", stopped)
    (stopped / "results.json").unlink()
    unsaved = LAST if saved == BEST else BEST  # killed after one of epoch 3's saves, before the other
    shutil.rmtree(stopped / "checkpoints" / unsaved / "3")
    resumed = train_and_evaluate(spec, stopped, log=lambda s: None)
    assert comparable(resumed) == comparable(straight)


def test_a_resume_drops_evaluations_of_checkpoints_it_replaces_and_records_starts_that_train(tmp_path):
    from flaxbench.train.evaluate import evaluate_workdir

    spec = tiny_spec(**{"train.epochs": 2})
    train_and_evaluate(spec, tmp_path, log=lambda s: None)
    (tmp_path / "results.json").unlink()  # stopped after its last epoch: nothing left to train
    assert train_and_evaluate(spec, tmp_path, log=lambda s: None)["device_starts"][-1]["first_epoch"] == 1
    (tmp_path / "results.json").unlink()
    shutil.rmtree(tmp_path / "checkpoints" / LAST / "2")  # stopped after epoch 1
    evaluate_workdir(tmp_path, "test")  # of epoch 1's checkpoint
    lines = []
    results = train_and_evaluate(spec, tmp_path, log=lines.append)
    assert not (tmp_path / "eval_test.json").exists() and any("removed eval_test.json" in line for line in lines)
    assert [start["first_epoch"] for start in results["device_starts"]] == [1, 2]


def test_a_run_resumed_with_other_code_says_so_and_records_each_starts_version(tmp_path, monkeypatch):
    from flaxbench.train import loop

    spec = tiny_spec(**{"train.epochs": 2})
    train_and_evaluate(spec, tmp_path, log=lambda s: None)
    (tmp_path / "results.json").unlink()
    shutil.rmtree(tmp_path / "checkpoints" / LAST / "2")  # stopped after epoch 1
    monkeypatch.setattr(loop, "flaxbench_version", lambda: "0.1.0+gcommitted1later")  # the checkout moved on
    lines = []
    results = train_and_evaluate(spec, tmp_path, log=lines.append)
    first, second = results["device_starts"]
    assert first["flaxbench_version"] != second["flaxbench_version"] == results["flaxbench_version"] == (
        "0.1.0+gcommitted1later")
    assert any(f"ran with flaxbench {first['flaxbench_version']} and the rest run with 0.1.0+gcommitted1later" in line
               for line in lines)


def test_ctrl_c_in_the_last_epoch_lets_the_run_finish(tmp_path):
    spec = tiny_spec(**{"train.epochs": 2})
    straight = train_and_evaluate(spec, tmp_path / "straight", log=lambda s: None)
    lines = []

    def log(line: str) -> None:
        lines.append(line)
        if line.startswith("epoch   2/2"):
            os.kill(os.getpid(), signal.SIGINT)

    finished = train_and_evaluate(spec, tmp_path / "stopped", log=log)
    assert comparable(finished) == comparable(straight)
    assert (tmp_path / "stopped" / "results.json").is_file() and "accuracy" in lines[-1]


@pytest.mark.parametrize("lost", ["spec.json", "data.json"])
def test_checkpoints_whose_spec_or_data_record_is_lost_are_not_resumed(tmp_path, lost):
    train_and_evaluate(tiny_spec(**{"train.epochs": 2}), tmp_path, log=lambda s: None)
    (tmp_path / "results.json").unlink()
    (tmp_path / lost).unlink()
    with pytest.raises(WorkdirError, match=f"holds checkpoints but no {lost}.*--overwrite"):
        train_and_evaluate(tiny_spec(**{"train.epochs": 2, "seed": 1}), tmp_path, log=lambda s: None)
    assert (tmp_path / "checkpoints" / LAST / "2").is_dir()


def test_a_model_that_fails_to_compile_leaves_the_run_it_would_overwrite(tmp_path, monkeypatch):
    from flaxbench.train.setup import Run

    train_and_evaluate(tiny_spec(**{"train.epochs": 1}), tmp_path, log=lambda s: None)
    finished = {path.name: path.read_bytes() for path in tmp_path.glob("*.json")}

    def fail(self, names, state):
        raise RuntimeError("XLA could not compile it")

    monkeypatch.setattr(Run, "compile", fail)
    with pytest.raises(RuntimeError, match="could not compile"):
        train_and_evaluate(tiny_spec(**{"train.epochs": 2}), tmp_path, overwrite=True, log=lambda s: None)
    assert {path.name: path.read_bytes() for path in tmp_path.glob("*.json")} == finished
    assert (tmp_path / "checkpoints" / LAST / "1").is_dir()


def test_a_run_that_fails_in_its_first_epoch_gives_back_the_run_it_would_overwrite(tmp_path):
    from flaxbench.errors import TrainingError

    train_and_evaluate(tiny_spec(**{"train.epochs": 1}), tmp_path, log=lambda s: None)
    finished = {path.name: path.read_bytes() for path in tmp_path.glob("*.json")}
    with pytest.raises(TrainingError, match="loss became"):
        train_and_evaluate(tiny_spec(**{"train.learning_rate": 1e12}), tmp_path, overwrite=True, log=lambda s: None)
    assert {path.name: path.read_bytes() for path in tmp_path.glob("*.json")} == finished
    assert (tmp_path / "checkpoints" / LAST / "1").is_dir() and not (tmp_path / ".replaced").exists()
    replaced = train_and_evaluate(tiny_spec(**{"train.epochs": 2}), tmp_path, overwrite=True, log=lambda s: None)
    assert json.loads((tmp_path / "results.json").read_text())["history"] == replaced["history"]
    assert len(replaced["history"]) == 2 and not (tmp_path / ".replaced").exists()


@pytest.mark.parametrize("bad", ["file_parent", "proc"])
def test_unwritable_workdir_is_refused_before_training(tmp_path, bad):
    if bad == "file_parent":
        (tmp_path / "f").write_text("x")
        workdir = tmp_path / "f" / "run"
    else:
        workdir = Path("/proc/flaxbench-run")
    with pytest.raises(WorkdirError, match="not writable"):
        train_and_evaluate(tiny_spec(), workdir, log=lambda s: None)


def test_a_run_resumed_on_other_devices_says_so_and_records_each_start(tmp_path):
    args = [*ARGS, "--spec.train.epochs=2", f"--workdir={tmp_path}"]
    first = run_cli(*args, "--spec.mesh.data=2", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert first.returncode == 0, first.stderr
    assert " x2, batch 8 as 4 a device" in first.stdout
    (tmp_path / "results.json").unlink()  # as if stopped after epoch 1
    shutil.rmtree(tmp_path / "checkpoints" / LAST / "2")
    resumed = run_cli(*args, "--spec.mesh.data=-1")  # where the work runs, not another spec
    assert resumed.returncode == 0, resumed.stderr
    assert "epochs up to 1 ran on cpu:" in resumed.stdout and "x2 and the rest run on cpu:" in resumed.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(start["first_epoch"], start["num_devices"]) for start in results["device_starts"]] == [(1, 2), (2, 1)]
    # evaluation spreads over the devices there are, though 3 do not divide the training batch of 8
    three = {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}
    evaluated = run_cli("evaluate", f"--workdir={tmp_path}", env=three)
    assert evaluated.returncode == 0, evaluated.stderr
    scores = json.loads((tmp_path / "eval_test.json").read_text())
    assert scores["accuracy"] == results["test_accuracy"] and len(scores["predictions"]["labels"]) == 36
