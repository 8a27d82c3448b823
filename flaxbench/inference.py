"""A trained run's checkpoint, restored for classifying tiles outside its own splits (predict, external evaluation)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np
import scipy.special
from jax.sharding import Mesh

from data_pipeline.parallel import in_groups
from data_pipeline.stain import StainTarget, normalize_tiles_counted, warn_kept
from flaxbench.checkpoints import RunCheckpoints
from flaxbench.errors import WorkdirError
from flaxbench.evaluation import log_softmax
from flaxbench.runtime import batch_sharding, local_mesh, replicated, to_device
from flaxbench.train.evaluate import read_run_spec, recorded_temperature, temperature_mismatch
from flaxbench.train.optim import make_optimizer
from flaxbench.train.setup import COMPUTE_DTYPES, init_model, resolve_dtype
from flaxbench.train.state import TrainState, split_model
from flaxbench.train.steps import make_batch_predict
from flaxbench.workdir import check_not_a_row_of_folds, fold_run_dirs

# Tiles decoded, normalised and sent to the devices together: host memory holds about two chunks,
# whatever the number of tiles (1024 tiles at 224 px: 154 MB).
CHUNK_TILES = 1024
PROGRESS_EVERY_S = 30.0
Key = TypeVar("Key")
ChunkHook = Callable[[list[Any], np.ndarray], None]  # (a chunk's keys, its uint8 tiles as the models see them)


def read_data_info(workdir: Path) -> dict:
    """Classes and image size the run was trained with (WORKDIR/data.json)."""
    path = workdir / "data.json"
    if not path.is_file():
        check_not_a_row_of_folds(workdir)
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
    # compiled forward passes by (devices, TTA, batch shape): a second pass over tiles compiles nothing
    programs: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def trained_at_native_size(self) -> bool:
        """True if the run's tiles kept their own size (spec.data.image_size None): resizing changes magnification."""
        return self.spec.data.image_size is None

    def logits(self, images: np.ndarray, *, tta: bool = False, batch_size: int | None = None) -> np.ndarray:
        """Float logits (N, classes) of uint8 tiles (N, size, size, 3), stain-normalised as the run's were."""
        chunks = self.stream_logits(zip(range(len(images)), images), "the tiles", tta=tta, batch_size=batch_size)
        return np.concatenate([logits for _, logits in chunks])

    def stream_logits(self, tiles: Iterable[tuple[Key, np.ndarray]], where: str, *, tta: bool = False,
                      batch_size: int | None = None, chunk_tiles: int | None = None,
                      expected: int | None = None) -> Iterator[tuple[list[Key], np.ndarray]]:
        """(keys, float logits (n, classes)) per chunk of (key, uint8 tile) pairs: `stream_logits` of this run alone."""
        return stream_logits([self], tiles, where, tta=tta, batch_size=batch_size, chunk_tiles=chunk_tiles,
                             expected=expected)

    def _compiled_predict(self, mesh: Mesh, tta: bool, batch: jax.ShapeDtypeStruct, weights: Any) -> Any:
        """The run's forward pass over one sharded `batch` of uint8 tiles, compiled as training compiles it (once for
        each mesh, TTA and batch shape)."""
        key = (tuple(device.id for device in mesh.devices.flat), tta, batch.shape)
        if key not in self.programs:
            self.programs[key] = self._compile_predict(mesh, tta, batch, weights)
        return self.programs[key]

    def _compile_predict(self, mesh: Mesh, tta: bool, batch: jax.ShapeDtypeStruct, weights: Any) -> Any:
        dtype = resolve_dtype(self.spec.train.dtype, mesh.devices.flat[0].platform)
        several = mesh.size > 1  # one device: no mesh, the program as it was measured
        predict = make_batch_predict(self.parts, normalize_mode=self.spec.data.normalize,
                                     compute_dtype=COMPUTE_DTYPES[dtype], mesh=mesh if several else None, tta=tta)
        # traced under the mesh, so that the CPU layers' batch loops run per device (models/local_batch.py)
        with jax.set_mesh(mesh) if several else contextlib.nullcontext():
            return jax.jit(predict).lower(*weights, batch).compile()


class ProgressLine:
    """Prints how many tiles are classified, how fast, and the time left, at most every PROGRESS_EVERY_S seconds."""

    def __init__(self, expected: int | None):
        self.expected, self.start = expected, time.perf_counter()
        self.last = self.start

    def update(self, done: int) -> None:
        """Say on stderr that `done` tiles are classified, if PROGRESS_EVERY_S have passed since it last spoke."""
        now = time.perf_counter()
        if now - self.last < PROGRESS_EVERY_S or done == 0:
            return
        self.last = now
        rate = done / (now - self.start)
        line = f"classified {done:,}{f' of {self.expected:,}' if self.expected else ''} tiles, {rate:,.0f} tiles/s"
        if self.expected and self.expected > done:
            line += f", about {math.ceil((self.expected - done) / rate / 60)} min left"
        print(line, file=sys.stderr, flush=True)


def _padded(images: np.ndarray, size: int) -> np.ndarray:
    """`images` with copies of its first tile appended up to `size` rows: one compiled shape for every step."""
    missing = size - len(images)
    return np.concatenate([images, np.repeat(images[:1], missing, axis=0)]) if missing else images


def stream_logits(runs: Sequence[TrainedRun], tiles: Iterable[tuple[Key, np.ndarray]], where: str, *,
                  tta: bool = False, batch_size: int | None = None, chunk_tiles: int | None = None,
                  expected: int | None = None, temperatures: np.ndarray | None = None,
                  on_chunk: ChunkHook | None = None) -> Iterator[tuple[list[Key], np.ndarray]]:
    """(keys, float logits (n, classes)) per chunk of (key, uint8 tile) pairs, of one run or several's ensemble.

    Several runs (e.g. a cross-validated row's folds) give the log of their mean class probabilities
    (`ensemble_logits`); with `temperatures` (one per run, `fitted_temperatures`), each run's logits are
    divided by its own first. The other arguments are those of `stream_member_logits`.
    """
    for keys, member_logits in stream_member_logits(runs, tiles, where, tta=tta, batch_size=batch_size,
                                                    chunk_tiles=chunk_tiles, expected=expected, on_chunk=on_chunk):
        if temperatures is not None:
            member_logits = member_logits / np.asarray(temperatures)[:, None, None]
        yield keys, ensemble_logits(member_logits)


def fitted_temperatures(runs: Sequence[TrainedRun], tta: bool) -> tuple[np.ndarray | None, str | None]:
    """(the temperature each run fitted on its validation tiles, None) where they apply to its outputs, else
    (None, why they do not)."""
    temperatures = []
    for run in runs:
        mismatch = temperature_mismatch(run.checkpoint, tta)
        if mismatch:
            return None, mismatch
        try:
            temperature = recorded_temperature(run.workdir)
        except WorkdirError as e:
            return None, str(e)
        if temperature is None:
            return None, (f"'{run.workdir / 'results.json'}' records no temperature (the run has not finished, or "
                          "was trained by a flaxbench that did not fit one)")
        temperatures.append(temperature)
    return np.array(temperatures), None


def ensemble_logits(member_logits: np.ndarray) -> np.ndarray:
    """The log of several runs' mean class probabilities from their logits (runs, n, classes); one run's as they are."""
    if len(member_logits) == 1:
        return member_logits[0]
    return scipy.special.logsumexp(log_softmax(member_logits), axis=0) - np.log(len(member_logits))


def stream_member_logits(runs: Sequence[TrainedRun], tiles: Iterable[tuple[Key, np.ndarray]], where: str, *,
                         tta: bool = False, batch_size: int | None = None, chunk_tiles: int | None = None,
                         expected: int | None = None, on_chunk: ChunkHook | None = None,
                         ) -> Iterator[tuple[list[Key], np.ndarray]]:
    """(keys, each run's float logits (runs, n, classes)) per chunk of `chunk_tiles` (key, uint8 tile) pairs.

    The runs must share tile size, classes and stain target (`load_trained_runs` checks it). Tiles are
    stain-normalised as the runs' were
    and split over this process's devices, `batch_size` a step (default: the first run's
    spec.train.eval_batch_size; rounded up to a multiple of the devices). Only a chunk or two of
    tiles is held at once (default: CHUNK_TILES rounded up to whole steps), and the devices work on
    one chunk while the next is decoded, since `tiles` is read lazily. A long run prints its
    progress to stderr (out of `expected` tiles, if given). `on_chunk(keys, images)` sees each chunk's
    tiles as the models do (resized, stain-normalised), e.g. to find tiles the runs trained on.
    """
    first = runs[0]
    mesh = local_mesh()
    batch_size = batch_size or int(first.spec.train.eval_batch_size)
    per_step = -(-batch_size // mesh.size) * mesh.size
    chunk_tiles = chunk_tiles or -(-CHUNK_TILES // per_step) * per_step
    sharding = batch_sharding(mesh)
    batch = jax.ShapeDtypeStruct((per_step, first.image_size, first.image_size, 3), np.uint8, sharding=sharding)
    members = []
    for run in runs:
        weights = jax.device_put((run.state.params, run.state.model_state), replicated(mesh))
        members.append((weights, run._compiled_predict(mesh, tta, batch, weights)))
    pending, total, kept, progress = None, 0, 0, ProgressLine(expected)
    for chunk in in_groups(tiles, chunk_tiles):
        keys, images = [key for key, _ in chunk], np.stack([image for _, image in chunk])
        if first.stain is not None:
            images, kept_here = normalize_tiles_counted(images, first.stain, out=images)  # stacked here
            kept += kept_here
        if on_chunk is not None:
            on_chunk(keys, images)
        total += len(images)
        # Dispatched now, read after the next chunk is decoded: the devices run meanwhile.
        steps = [to_device(_padded(images[i:i + per_step], per_step), sharding)
                 for i in range(0, len(images), per_step)]
        outputs = [[predict(*weights, step) for step in steps] for weights, predict in members]
        if pending is not None:
            yield _fetched(*pending)
            progress.update(total - len(keys))
        pending = keys, outputs
    if pending is not None:
        yield _fetched(*pending)
    warn_kept(kept, total, where)


def _fetched(keys: list[Key], outputs: list[list[jax.Array]]) -> tuple[list[Key], np.ndarray]:
    """(keys, each run's logits on the host (runs, n, classes)): the last step's padding dropped."""
    return keys, np.stack([np.concatenate([np.asarray(output) for output in steps])[:len(keys)] for steps in outputs])


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


def load_trained_runs(workdir: str | Path, which: str) -> list[TrainedRun]:
    """The run in `workdir`, or every run of a cross-validated row's folder, with its `which` checkpoint restored.

    The runs of a row's folder must have finished training and share classes, tile size and stain
    target (WorkdirError otherwise).
    """
    workdir = Path(workdir)
    folders = fold_run_dirs(workdir)
    if not folders:
        return [load_trained_run(workdir, which)]
    unfinished = [folder for folder in folders if not (folder / "results.json").is_file()]
    if unfinished:  # a run stopped mid-way has a best checkpoint, but not the one its training would pick
        raise WorkdirError(f"the run in '{unfinished[0]}' has not finished training (no results.json), so the "
                           f"{len(folders)} runs in '{workdir}' cannot be taken together; finish it (run the study "
                           "again), or give the folder of one finished run")
    runs = [load_trained_run(folder, which) for folder in folders]
    first = runs[0]
    for run in runs[1:]:
        for what, ours, theirs in (("classes", first.classes, run.classes), ("tile size", first.image_size,
                                   run.image_size), ("stain target", _stain_json(first), _stain_json(run))):
            if ours != theirs:
                raise WorkdirError(f"the runs in '{workdir}' differ in their {what} ({ours} in {first.workdir}, "
                                   f"{theirs} in {run.workdir}); give the folder of one run")
    return runs


def _stain_json(run: TrainedRun) -> Any:
    return None if run.stain is None else run.stain.to_json()


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
