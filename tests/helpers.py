"""Tiny specs and run helpers shared by the tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def load_repo_spec(name: str) -> ml_collections.ConfigDict:
    """A spec from specs/ by file stem."""
    from flaxbench.spec import load_spec_file

    return load_spec_file(REPO / "specs" / f"{name}.py")


def tiny_spec(**overrides) -> ml_collections.ConfigDict:
    """ConvModel on a few synthetic 32 px tiles: trains in seconds on CPU."""
    from flaxbench.spec import apply_overrides

    spec = load_repo_spec("common")
    spec.name = "tiny"
    spec.data.source = "synthetic"
    spec.data.synthetic_per_class = 16
    spec.data.image_size = 32
    spec.data.split = (48, 24, 24)
    spec.model.name = "convmodel"
    spec.model.options = dict(channels=(8, 16, 16), hidden=32, dropout=0.0)
    spec.train.epochs = 3
    spec.data.normalize = "centered"
    spec.train.batch_size = 8
    spec.train.eval_batch_size = 16
    spec.train.learning_rate = 3e-3
    spec.train.warmup_epochs = 0.0
    spec.mesh.data = 1
    apply_overrides(spec, overrides)
    return spec


def run_cli(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m flaxbench ARGS` in a subprocess; returns the completed process."""
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    return subprocess.run([sys.executable, "-m", "flaxbench", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def pooled_predictions(labels: np.ndarray, predicted_by_seed: list[np.ndarray], num_classes: int) -> tuple:
    """(correct, trials, labels, predicted counts) of several seeds' predictions on the same tiles, per tile."""
    counts = sum(np.eye(num_classes, dtype=int)[p] for p in predicted_by_seed)
    correct = sum((p == labels).astype(int) for p in predicted_by_seed)
    return correct, np.full(len(labels), len(predicted_by_seed)), labels, counts


@contextlib.contextmanager
def unwritable(folder: Path):
    """`folder` made unwritable for the block: mode 0555, or the immutable flag for root, whom modes do not stop."""
    root = os.geteuid() == 0
    if root and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip(f"chattr cannot make '{folder}' immutable here")
    if not root:
        folder.chmod(0o555)
    try:
        try:
            (folder / "probe").touch()
        except OSError:
            pass  # unwritable, as wanted
        else:
            (folder / "probe").unlink()
            pytest.skip(f"'{folder}' could not be made unwritable here")
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True) if root else folder.chmod(0o755)
