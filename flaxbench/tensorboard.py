"""TensorBoard event files of a run: per-epoch losses, accuracies, learning rate, images/s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SCALARS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate", "images_per_second")


class EpochWriter:
    """Writes one scalar per metric and epoch under WORKDIR/tensorboard."""

    def __init__(self, workdir: str | Path):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def write(self, entry: dict[str, Any]) -> None:
        """Log one history entry at step = epoch."""
        for name in SCALARS:
            group, _, metric = name.partition("_")
            tag = f"{group}/{metric}" if group in ("train", "val") else name
            self.writer.add_scalar(tag, entry[name], entry["epoch"])
        self.writer.flush()

    def __enter__(self) -> "EpochWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.writer.close()
