"""Tiles held in host memory and sent batch by batch train and evaluate as device-resident tiles do."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal

import numpy as np
import pytest

from data_pipeline import load_dataset
from flaxbench.errors import SpecError
from flaxbench.train import host_feed
from flaxbench.train.evaluate import evaluate_workdir
from flaxbench.train.loop import train_and_evaluate
from flaxbench.train.stops import Interrupted
from flaxbench.train.setup import build_run
from tests.helpers import tiny_spec

# Augmentation with random draws of every kind, and dropout: the per-step keys must line up too.
RANDOM_STEPS = {"data.augment": ("hflip", "vflip", "rot90", "brightness", "hed"), "model.options.dropout": 0.3}


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory):
    """The same spec trained with the tiles on device and in host memory."""
    root = tmp_path_factory.mktemp("placement")
    return {placement: (root / placement, train_and_evaluate(
        tiny_spec(**RANDOM_STEPS, **{"train.data_placement": placement}), root / placement, log=lambda line: None))
        for placement in ("device", "host")}


def test_host_fed_training_gives_the_numbers_of_device_resident_training(both_runs):
    (_, device), (_, host) = both_runs["device"], both_runs["host"]
    assert (device["data_placement"], host["data_placement"]) == ("device", "host")
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert [epoch[key] for epoch in host["history"]] == [epoch[key] for epoch in device["history"]], key
    assert host["test_predictions"] == device["test_predictions"]
    assert (host["test_loss"], host["flops_per_image"]) == (device["test_loss"], device["flops_per_image"])
    assert len({epoch["train_loss"] for epoch in host["history"]}) == len(host["history"])  # it did train


@pytest.mark.parametrize("split, tta", [("test", True), ("train", False)])
def test_a_host_fed_run_evaluates_from_its_checkpoint_as_a_device_resident_one(both_runs, split, tta):
    device = evaluate_workdir(both_runs["device"][0], split, tta=tta)
    host = evaluate_workdir(both_runs["host"][0], split, tta=tta)
    assert host["predictions"] == device["predictions"] and host["loss"] == device["loss"]
    if split == "test" and not tta:
        assert host["loss"] == both_runs["host"][1]["test_loss"]


@pytest.mark.parametrize("first, then", [("host", "host"), ("device", "host")])
def test_a_host_fed_run_resumes_to_the_numbers_of_an_uninterrupted_one(both_runs, tmp_path, first, then):
    # e.g. started on a large GPU, resumed on one its tiles do not fit on: the placement may change
    def stop_after_epoch_2(line: str) -> None:
        if line.startswith("epoch   2/"):
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: the epoch is saved, then the run stops

    with pytest.raises(Interrupted):
        train_and_evaluate(tiny_spec(**RANDOM_STEPS, **{"train.data_placement": first}), tmp_path,
                           log=stop_after_epoch_2)
    resumed = train_and_evaluate(tiny_spec(**RANDOM_STEPS, **{"train.data_placement": then}), tmp_path,
                                 log=lambda line: None)
    assert resumed["data_placement"] == then
    timing = ("epoch_time_s", "images_per_second")
    assert [{k: v for k, v in epoch.items() if k not in timing} for epoch in resumed["history"]] == [
        {k: v for k, v in epoch.items() if k not in timing} for epoch in both_runs["host"][1]["history"]]
    assert resumed["test_predictions"] == both_runs["host"][1]["test_predictions"]


def test_auto_keeps_tiles_on_device_while_half_of_its_memory_holds_them(monkeypatch, caplog):
    spec = tiny_spec()  # 96 tiles of 32 x 32 x 3: 294,912 bytes
    monkeypatch.setattr(host_feed, "device_memory_bytes", lambda devices: 2 * 294_912)
    assert build_run(spec).placement == "device"
    monkeypatch.setattr(host_feed, "device_memory_bytes", lambda devices: 2 * 294_912 - 2)
    with caplog.at_level(logging.WARNING):
        run = build_run(spec)
    assert run.placement == "host" and isinstance(run.splits["train"].images, np.ndarray)
    assert "the tiles take 0.0 GiB, over 50% of the 0.0 GiB of device memory" in caplog.text
    assert "set 'device' to force them onto it" in caplog.text
    assert build_run(tiny_spec(**{"train.data_placement": "device"})).placement == "device"  # as asked


def _unaligned(images: np.ndarray) -> np.ndarray:
    """A copy of `images` starting 16 bytes past a 64-byte boundary, as numpy's own allocations may."""
    buffer = np.empty(images.nbytes + 128, np.uint8)
    start = -buffer.ctypes.data % 64 + 16
    copy = buffer[start:start + images.nbytes].reshape(images.shape)
    copy[...] = images
    return copy


def test_auto_on_cpu_keeps_tiles_on_the_host_when_a_device_copy_would_not_fit_in_its_memory(monkeypatch, caplog):
    monkeypatch.setattr(host_feed, "device_memory_bytes", lambda devices: None)  # CPU devices report none
    monkeypatch.setattr(host_feed, "available_host_bytes", lambda: 0)
    dataset = load_dataset(tiny_spec().data)
    assert all(split.images.ctypes.data % 64 == 0 for split in (dataset.train, dataset.val, dataset.test))
    run = build_run(tiny_spec(), dataset)  # loaded tiles are aligned: the CPU device shares them, no copy
    assert run.placement == "device"
    assert run.splits["train"].images.addressable_data(0).unsafe_buffer_pointer() == dataset.train.images.ctypes.data
    val = _unaligned(dataset.val.images)  # copied when placed
    unaligned = dataclasses.replace(dataset, val=dataclasses.replace(dataset.val, images=val))
    monkeypatch.setattr(host_feed, "available_host_bytes", lambda: val.nbytes)
    assert build_run(tiny_spec(), unaligned).placement == "device"
    monkeypatch.setattr(host_feed, "available_host_bytes", lambda: val.nbytes - 1)
    with caplog.at_level(logging.WARNING):
        assert build_run(tiny_spec(), unaligned).placement == "host"
    assert "a device copy of the tiles (0.0 GiB) would not fit in the 0.0 GiB of host memory left" in caplog.text


def test_auto_follows_another_process_whose_memory_is_short(monkeypatch):
    # the processes of one run must run the same programs, so one process short of memory decides for all
    monkeypatch.setattr(host_feed, "device_memory_bytes", lambda devices: 2**40)
    monkeypatch.setattr(host_feed, "any_process", lambda flag: True)
    run = build_run(tiny_spec())
    assert run.placement == "host"
    tiles = [np.zeros(10, np.uint8)]
    assert host_feed.choose_placement("auto", tiles, run.mesh) == (
        "host", "another process of this run has too little memory for them")
    monkeypatch.setattr(host_feed, "any_process", lambda flag: flag)
    assert host_feed.choose_placement("auto", tiles, run.mesh) == ("device", None)


def test_the_scanned_epoch_needs_the_tiles_on_device(tmp_path):
    spec = tiny_spec(**{"train.data_placement": "host", "train.epoch_loop": "scan"})
    with pytest.raises(SpecError, match=r"spec.train.epoch_loop='scan' needs the tiles on device, but "
                                        r"spec.train.data_placement='host' keeps them in host memory; set "):
        train_and_evaluate(spec, tmp_path / "run", log=lambda line: None)
    assert not (tmp_path / "run").exists()


def test_results_record_where_the_tiles_were_held(both_runs):
    saved = json.loads((both_runs["host"][0] / "results.json").read_text())
    assert saved["data_placement"] == "host"
    assert json.loads((both_runs["host"][0] / "spec.json").read_text())["train"]["data_placement"] == "host"
