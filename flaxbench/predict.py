"""Classify new tile files with a trained run's checkpoint and write a CSV of probabilities."""

from __future__ import annotations

import collections
import csv
import functools
import io
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_pipeline import DataError, load_image
from data_pipeline.images import IMAGE_EXTENSIONS, UndecodableImage, decode_image, is_image_name, resize_square
from data_pipeline.images import center_crop as center_crop_image
from data_pipeline.groups import check_group_by, tile_groups
from data_pipeline.sources.folder_source import list_visible_files, read_zip_files
from flaxbench.checkpoints import BEST
from flaxbench.errors import WorkdirError
from flaxbench.evaluation import log_softmax
from flaxbench.inference import check_center_crop, load_trained_run, resize_warning
from flaxbench.results import write_text_atomic

Tile = tuple[str, Callable[[], np.ndarray]]  # (name in the CSV, decode() -> uint8 RGB)


def expand_paths(paths: Sequence[str]) -> tuple[list[Tile], list[str]]:
    """(tiles, skipped files with the reason): files as given, folders and zips expanded as a folder source lists them.

    Files without an image extension are skipped, as training skips them; inside folders and
    zips, hidden files (`.DS_Store`, `._*`, `Thumbs.db`, dot folders) are ignored.
    """
    tiles: list[Tile] = []
    skipped: list[str] = []
    not_image = f"not an image: supported extensions {' '.join(IMAGE_EXTENSIONS)}"

    def add_file(path: Path) -> None:
        if is_image_name(path.name):
            tiles.append((str(path), functools.partial(load_image, str(path))))
        else:
            skipped.append(f"{path} ({not_image})")

    for p in map(Path, paths):
        if p.is_dir():
            for rel in list_visible_files(str(p)):
                add_file(p / rel)
        elif p.is_file() and p.suffix.lower() == ".zip":
            if not zipfile.is_zipfile(p):
                skipped.append(f"{p} (not a readable zip: damaged or incompletely downloaded?)")
                continue
            for name, data in read_zip_files(str(p)):
                if not is_image_name(name):
                    skipped.append(f"{name} ({not_image})")
                elif isinstance(data, OSError):
                    skipped.append(f"{name} ({data})")
                else:
                    tiles.append((name, functools.partial(decode_image, data, name)))
        elif p.exists():
            add_file(p)
        else:
            raise WorkdirError(f"'{p}' does not exist; give tile files, folders or zips to predict")
    return tiles, skipped


def predict_paths(workdir: str | Path, paths: Sequence[str], out_csv: str | Path, *, which: str = BEST,
                  batch_size: int = 64, overwrite: bool = False, tta: bool = False,
                  group_by: str | None = None, center_crop: int | None = None) -> Path:
    """Predict every image under `paths` with the run's `which` checkpoint (`tta`: 8-view average); returns the CSV.

    `group_by` (a regular expression, as spec.data.group_by) also writes OUT_groups.csv: the mean class
    probabilities of each group's tiles, e.g. per slide or patient. `center_crop` keeps each tile's
    central square of that many pixels before resizing, as `evaluate --external` does.
    """
    check_center_crop(center_crop)
    workdir, out = Path(workdir), Path(out_csv)
    tiles, skipped = expand_paths(paths)
    check_group_by(group_by, "--group-by")
    group_out = out.with_name(f"{out.stem}_groups.csv") if group_by else None
    if out.is_dir():
        raise WorkdirError(f"--out '{out}' is a folder; give a file name such as '{out / 'predictions.csv'}'")
    for path in (out, group_out):
        if path is not None and path.exists() and not overwrite:
            raise WorkdirError(f"'{path}' already exists (earlier predictions?); give another --out, or add "
                               "--overwrite to replace it")
    run = load_trained_run(workdir, which)
    classes, size = run.classes, run.image_size
    images, names, other_sizes = [], [], collections.Counter()
    for name, decode in tiles:
        try:
            image = decode()
        except (DataError, UndecodableImage) as e:
            skipped.append(f"{name} ({e})")
            continue
        if center_crop:
            image = center_crop_image(image, center_crop, name)
        if image.shape[:2] != (size, size):
            other_sizes[f"{image.shape[0]}x{image.shape[1]}"] += 1
        images.append(resize_square(image, size))
        names.append(name)
    for line in skipped:
        print(f"skipped, not a readable image: {line}", file=sys.stderr)
    if not images:
        raise WorkdirError(f"no readable tiles in {', '.join(map(str, paths))}; nothing predicted, nothing written")
    warning = None if center_crop else resize_warning(run, other_sizes)  # a chosen crop is no accident
    if warning:
        print(warning, file=sys.stderr)
    logits = run.logits(run.prepare(np.stack(images), "the tiles to predict"), tta=tta, batch_size=batch_size)
    probabilities = np.exp(log_softmax(logits))
    # A tile without a group fails here, before anything is written.
    groups = tile_groups(names, group_by, "--group-by") if group_by else None
    rows = [[name, classes[int(p.argmax())], *[f"{x:.6f}" for x in p]] for name, p in zip(names, probabilities)]
    write_text_atomic(out, _csv(["path", "predicted_class", *[f"prob_{c}" for c in classes]], rows))
    print(f"predicted {len(rows)} tiles ({len(skipped)} skipped) with {which} checkpoint"
          f"{' and 8-view TTA' if tta else ''} -> {out}")
    if groups is not None:
        order = sorted(set(groups))
        position = {group: k for k, group in enumerate(order)}
        members = np.asarray([position[g] for g in groups])
        group_rows = []
        for k, group in enumerate(order):
            mean = probabilities[members == k].mean(axis=0)
            group_rows.append([group, int((members == k).sum()), classes[int(mean.argmax())], *[f"{x:.6f}" for x in mean]])
        write_text_atomic(group_out, _csv(["group", "tiles", "predicted_class", *[f"prob_{c}" for c in classes]],
                                          group_rows))
        print(f"mean probabilities of {len(order)} groups ({group_by!r}) -> {group_out}")
    return out


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    """CSV text of a header row and `rows`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()

