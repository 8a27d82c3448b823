"""A trained run's checkpoint, restored for classifying tiles outside its own splits (predict, external evaluation)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from data_pipeline.stain import StainTarget, normalize_tiles
from flaxbench.checkpoints import RunCheckpoints
from flaxbench.errors import WorkdirError
from flaxbench.train.evaluate import read_run_spec
from flaxbench.train.optim import make_optimizer
from flaxbench.train.setup import COMPUTE_DTYPES, init_model, resolve_dtype
from flaxbench.train.state import TrainState, split_model
from flaxbench.train.steps import make_batch_predict


def read_data_info(workdir: Path) -> dict:
    """Classes and image size the run was trained with (WORKDIR/data.json)."""
    path = workdir / "data.json"
    if not path.is_file():
        raise WorkdirError(f"'{path}' does not exist: train the run in '{workdir}' first")
    return json.loads(path.read_text())


@dataclasses.dataclass
class TrainedRun:
    """One checkpoint of a run and what its tiles were: classes, tile size, stain target."""

    workdir: Path
    spec: Any
    classes: list[str]
    image_size: int
    stain: StainTarget | None
    synthetic: bool
    checkpoint: str
    epoch: int
    state: TrainState
    parts: Any

    @property
    def trained_at_native_size(self) -> bool:
        """True if the run's tiles kept their own size (spec.data.image_size None): resizing changes magnification."""
        return self.spec.data.image_size is None

    def prepare(self, images: np.ndarray, what: str) -> np.ndarray:
        """uint8 tiles at the run's size, stain-normalised as the run's tiles were."""
        return normalize_tiles(images, self.stain, what) if self.stain is not None else images

    def logits(self, images: np.ndarray, *, tta: bool = False, batch_size: int = 64) -> np.ndarray:
        """Float logits (N, classes) of uint8 tiles (N, size, size, 3), one device, `batch_size` at a time."""
        dtype = resolve_dtype(self.spec.train.dtype, jax.devices()[0].platform)
        predict = jax.jit(make_batch_predict(self.parts, normalize_mode=self.spec.data.normalize,
                                             compute_dtype=COMPUTE_DTYPES[dtype], mesh=None, tta=tta))
        out = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            n = len(chunk)
            # one compiled shape: the last batch is padded with copies of its first tile
            padded = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - n, axis=0)]) if n < batch_size else chunk
            out.append(np.asarray(predict(self.state.params, self.state.model_state, jnp.asarray(padded)))[:n])
        return np.concatenate(out)


def load_trained_run(workdir: str | Path, which: str) -> TrainedRun:
    """The run in `workdir` with its `which` checkpoint (best or last) restored; WorkdirError if it has none."""
    workdir = Path(workdir)
    spec = read_run_spec(workdir)
    info = read_data_info(workdir)
    stain = StainTarget.from_json(info["stain_normalization"]) if info.get("stain_normalization") else None
    classes, size = list(info["classes"]), int(info["image_size"][0])
    if info.get("synthetic"):
        print(f"warning: the run in '{workdir}' was trained on SYNTHETIC DATA; its outputs say nothing "
              "about real tissue", file=sys.stderr)
    model = init_model(spec, classes, size, load_weights=False)
    parts = split_model(model)
    tx, _ = make_optimizer(spec.train, 1, tuple(model.head_path))
    template = TrainState(parts.params, parts.model_state, jax.jit(tx.init)(parts.params))
    restored = RunCheckpoints(workdir / "checkpoints", read_only=True).restore(which, template)
    if restored is None:
        raise WorkdirError(f"no '{which}' checkpoint in '{workdir / 'checkpoints'}'; train the run first")
    state, _, epoch = restored
    return TrainedRun(workdir, spec, classes, size, stain, bool(info.get("synthetic")), which, epoch, state, parts)


def resize_warning(run: TrainedRun, other_sizes: dict[str, int]) -> str | None:
    """A warning when a run trained on tiles at their own size meets tiles of other sizes; None otherwise."""
    if not other_sizes or not run.trained_at_native_size:
        return None
    size = run.image_size
    return (f"warning: the run trained on {size}x{size} px tiles; resized to that (which changes their "
            f"magnification): {count_sizes(other_sizes)} px")


def count_sizes(counts: dict[str, int], noun: str = "") -> str:
    """'12 at 224x224, 3 at 150x150' (with `noun` 'tiles': '12 tiles at ...'): counts by size, most common first."""
    label = f" {noun}" if noun else ""
    return ", ".join(f"{n}{label} at {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def check_center_crop(center_crop: int | None) -> None:
    """WorkdirError unless `center_crop` is None or a positive number of pixels."""
    if center_crop is not None and (isinstance(center_crop, bool) or not isinstance(center_crop, int)
                                    or center_crop < 1):
        raise WorkdirError(f"--center-crop must be a positive number of pixels, got {center_crop!r}")
