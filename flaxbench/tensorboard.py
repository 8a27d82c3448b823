"""TensorBoard event files of a run: per-epoch losses, accuracies, learning rate, images/s."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

SCALARS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate", "images_per_second")


class EpochWriter:
    """Writes one scalar per metric and epoch under WORKDIR/tensorboard."""

    def __init__(self, workdir: str | Path, *, enabled: bool = True):
        SummaryWriter = summary_writer_class()
        # Disabled on all but one process of a multi-process run, which would log the same curves.
        self.writer = SummaryWriter(str(Path(workdir) / "tensorboard")) if enabled else None

    def write(self, entry: dict[str, Any]) -> None:
        """Log one history entry at step = epoch."""
        if self.writer is None:
            return
        for name in SCALARS:
            group, _, metric = name.partition("_")
            tag = f"{group}/{metric}" if group in ("train", "val") else name
            self.writer.add_scalar(tag, entry[name], entry["epoch"])
        self.writer.flush()

    def __enter__(self) -> "EpochWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()


def summary_writer_class() -> type:
    """tensorboardX's SummaryWriter, imported without importing torch if torch is not loaded yet.

    tensorboardX imports torch, when installed, only to accept torch tensors; flaxbench logs floats,
    and the import took 2.5 s of every training run on a 2-core CPU.
    """
    block_torch = "torch" not in sys.modules
    if block_torch:
        sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        if block_torch:
            del sys.modules["torch"]
    return SummaryWriter
