"""Classify new tile files with a trained run's checkpoint and write a CSV of probabilities."""

from __future__ import annotations

import collections
import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from data_pipeline import DataError, load_image
from data_pipeline.images import IMAGE_EXTENSIONS, is_image_name, resize_square
from data_pipeline.sources.folder_source import list_visible_files
from flaxbench.checkpoints import BEST, RunCheckpoints
from flaxbench.errors import WorkdirError
from flaxbench.evaluation import log_softmax
from flaxbench.results import write_text_atomic
from flaxbench.train.evaluate import read_run_spec
from flaxbench.train.optim import make_optimizer
from flaxbench.train.setup import COMPUTE_DTYPES, init_model, resolve_dtype
from flaxbench.train.state import TrainState, split_model
from flaxbench.train.steps import make_predict

def expand_paths(paths: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """(image files, other files): files as given, folders expanded as a folder source lists them.

    Files without an image extension are returned as others, as training treats them; inside
    folders, hidden files (`.DS_Store`, `._*`, `Thumbs.db`, dot folders) are ignored.
    """
    files: list[Path] = []
    others: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            for rel in list_visible_files(str(p)):
                (files if is_image_name(rel) else others).append(p / rel)
        elif p.exists():
            (files if is_image_name(p.name) else others).append(p)
        else:
            raise WorkdirError(f"'{p}' does not exist; give tile files or folders to predict")
    return files, others


def read_data_info(workdir: Path) -> dict:
    """Classes and image size the run was trained with (WORKDIR/data.json)."""
    path = workdir / "data.json"
    if not path.is_file():
        raise WorkdirError(f"'{path}' does not exist: train the run in '{workdir}' first")
    return json.loads(path.read_text())


def predict_paths(workdir: str | Path, paths: Sequence[str], out_csv: str | Path, *, which: str = BEST,
                  batch_size: int = 64, overwrite: bool = False) -> Path:
    """Predict every image under `paths` with the run's `which` checkpoint; returns the CSV path."""
    workdir, out = Path(workdir), Path(out_csv)
    if out.is_dir():
        raise WorkdirError(f"--out '{out}' is a folder; give a file name such as '{out / 'predictions.csv'}'")
    if out.exists() and not overwrite:
        raise WorkdirError(f"'{out}' already exists (earlier predictions?); give another --out, or add --overwrite "
                           "to replace it")
    spec = read_run_spec(workdir)
    info = read_data_info(workdir)
    classes, size = list(info["classes"]), int(info["image_size"][0])
    if info.get("synthetic"):
        print(f"warning: the run in '{workdir}' was trained on SYNTHETIC DATA; its predictions say nothing "
              "about real tissue", file=sys.stderr)
    model = init_model(spec, classes, size, load_weights=False)
    parts = split_model(model)
    tx, _ = make_optimizer(spec.train, 1, tuple(model.head_path))
    template = TrainState(parts.params, parts.model_state, tx.init(parts.params))
    restored = RunCheckpoints(workdir / "checkpoints", read_only=True).restore(which, template)
    if restored is None:
        raise WorkdirError(f"no '{which}' checkpoint in '{workdir / 'checkpoints'}'; train the run first")
    state = restored[0]
    files, not_images = expand_paths(paths)
    images, names, other_sizes = [], [], collections.Counter()
    skipped = [f"{f} (not an image: supported extensions {' '.join(IMAGE_EXTENSIONS)})" for f in not_images]
    for f in files:
        try:
            image = load_image(str(f))
        except DataError as e:
            skipped.append(f"{f} ({e})")
            continue
        if image.shape[:2] != (size, size):
            other_sizes[f"{image.shape[0]}x{image.shape[1]}"] += 1
        images.append(resize_square(image, size))
        names.append(str(f))
    for line in skipped:
        print(f"skipped, not a readable image: {line}", file=sys.stderr)
    if not images:
        raise WorkdirError(f"no readable tiles in {', '.join(map(str, paths))}; nothing predicted, nothing written")
    if other_sizes and spec.data.image_size is None:
        # the run trained on tiles at their own size: resizing others changes their magnification
        sizes = ", ".join(f"{n} at {s}" for s, n in other_sizes.most_common())
        print(f"warning: the run trained on {size}x{size} px tiles; resized to that: {sizes} px", file=sys.stderr)
    dtype = resolve_dtype(spec.train.dtype, jax.devices()[0].platform)
    predict = jax.jit(make_predict(parts, normalize_mode=spec.data.normalize,
                                   compute_dtype=COMPUTE_DTYPES[dtype], mesh=None))
    rows = []
    for start in range(0, len(images), batch_size):
        chunk = np.stack(images[start:start + batch_size])
        n = len(chunk)
        padded = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - n, axis=0)]) if n < batch_size else chunk
        logits = np.asarray(predict(state.params, state.model_state, jnp.asarray(padded),
                                    jnp.arange(batch_size)[None]))[:n]
        probs = np.exp(log_softmax(logits))
        rows += [[names[start + i], classes[int(p.argmax())], *[f"{x:.6f}" for x in p]] for i, p in enumerate(probs)]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "predicted_class", *[f"prob_{c}" for c in classes]])
    writer.writerows(rows)
    write_text_atomic(out, buffer.getvalue())
    print(f"predicted {len(rows)} tiles ({len(skipped)} skipped) with {which} checkpoint -> {out}")
    return out

