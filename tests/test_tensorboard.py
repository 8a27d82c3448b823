"""TensorBoard event files: one scalar per metric and epoch, written without loading torch."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

ENTRIES = [
    {"epoch": epoch, "train_loss": 1.5 / epoch, "train_accuracy": 0.3 * epoch, "val_loss": 1.6 / epoch,
     "val_accuracy": 0.25 * epoch, "learning_rate": 1e-3 / epoch, "images_per_second": 100.0 + epoch}
    for epoch in (1, 2)
]

TAGS = {"train/loss": "train_loss", "train/accuracy": "train_accuracy", "val/loss": "val_loss",
        "val/accuracy": "val_accuracy", "learning_rate": "learning_rate", "images_per_second": "images_per_second"}

# In a fresh process: whether writing them imported torch (tensorboardX would, for its tensors).
WRITE_ENTRIES = """
import json, sys
from flaxbench.tensorboard import EpochWriter
before = "torch" in sys.modules
with EpochWriter(sys.argv[1]) as board:
    for entry in json.loads(sys.argv[2]):
        board.write(entry)
print(json.dumps([before, "torch" in sys.modules]))
"""


def read_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of every event file in `directory` (TFRecord framing: length, CRC, event, CRC)."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_each_epoch_is_one_scalar_per_metric_and_torch_is_not_loaded(tmp_path):
    pytest.importorskip("torch")  # only then is there something not to load
    done = subprocess.run([sys.executable, "-c", WRITE_ENTRIES, str(tmp_path), json.dumps(ENTRIES)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [False, False]
    scalars = read_scalars(tmp_path / "tensorboard")
    assert set(scalars) == set(TAGS)
    for tag, name in TAGS.items():
        assert scalars[tag] == [(e["epoch"], pytest.approx(e[name], rel=1e-6)) for e in ENTRIES], tag
