"""Stopping a run cleanly: SIGINT/SIGTERM become a request to stop after the current epoch."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint."""

    def __init__(self, signal_name: str, epoch: int, workdir: Path):
        super().__init__(signal_name, epoch, workdir)
        self.signal_name, self.epoch, self.workdir = signal_name, epoch, workdir


class StopRequests:
    """Turns SIGINT/SIGTERM into a request to stop after the current epoch (a second one kills)."""

    def __init__(self):
        self.signal_name: str | None = None
        self.previous: dict[int, Any] = {}
        self.testing = False  # past the last epoch: a request lets the run finish

    def __enter__(self) -> "StopRequests":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        doing = ("the epochs are done: testing the best one and writing results.json" if self.testing
                 else "finishing this epoch and saving a checkpoint")
        print(f"\n{self.signal_name} received: {doing} (send it again to stop at once)", flush=True)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
