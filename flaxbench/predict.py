"""Classify new tile files with a trained run's checkpoint and write a CSV of probabilities."""

from __future__ import annotations

import collections
import contextlib
import csv
import functools
import io
import os
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_pipeline.groups import check_group_by, tile_groups
from data_pipeline.images import IMAGE_EXTENSIONS, is_image_name
from data_pipeline.sources.file_tree import list_visible_files, open_zip_files, read_file
from data_pipeline.sources.folder_source import ListedTile, decode_tiles
from flaxbench.checkpoints import BEST
from flaxbench.errors import WorkdirError
from flaxbench.evaluation import log_softmax
from flaxbench.inference import (
    check_center_crop, fitted_temperatures, load_trained_runs, resize_warning, stream_logits,
)
from flaxbench.results import atomic_text_file, write_text_atomic
from flaxbench.seen_groups import seen_groups_record, seen_groups_warning, training_groups
from flaxbench.seen_tiles import runs_in_words, tiles_seen_by
from flaxbench.tile_map import check_map_classes, check_map_pattern, map_cells, tile_grids, write_maps

def expand_paths(paths: Sequence[str], open_zips: contextlib.ExitStack) -> tuple[list[ListedTile], list[str]]:
    """(tiles, skipped files with the reason): files as given, folders and zips expanded as a folder source lists them.

    Files without an image extension are skipped, as training skips them; inside folders and
    zips, hidden files (`.DS_Store`, `._*`, `Thumbs.db`, dot folders) are ignored. Zips stay open
    in `open_zips`, and their tiles are read from them as they are decoded.
    """
    tiles: list[ListedTile] = []
    skipped: list[str] = []
    not_image = f"not an image: supported extensions {' '.join(IMAGE_EXTENSIONS)}"
    seen: set[str] = set()  # each file (or zip member) once, however often the paths reach it
    repeated: list[str] = []

    def add(name: str, read: Callable[[], bytes], file: str) -> None:
        if file in seen:
            repeated.append(name)
        elif is_image_name(name):
            tiles.append(ListedTile(label=-1, id=name, display=name, read=read))
        else:
            skipped.append(f"{name} ({not_image})")
        seen.add(file)

    for p in map(Path, paths):
        if p.is_dir():
            for rel in list_visible_files(str(p)):
                add(str(p / rel), functools.partial(read_file, str(p / rel)), os.path.realpath(p / rel))
        elif p.is_file() and p.suffix.lower() == ".zip":
            if not zipfile.is_zipfile(p):
                skipped.append(f"{p} (not a readable zip: damaged or incompletely downloaded?)")
                continue
            zip_file = os.path.realpath(p)
            for name, read in open_zips.enter_context(open_zip_files(str(p))):
                add(name, read, f"{zip_file}:{name[len(str(p)) + 1:]}")  # name: ZIP:member
        elif p.exists():
            add(str(p), functools.partial(read_file, str(p)), os.path.realpath(p))
        else:
            raise WorkdirError(f"'{p}' does not exist; give tile files, folders or zips to predict")
    if repeated:
        print(f"note: {len(repeated)} file(s) reached more than once through the paths given (e.g. '{repeated[0]}') "
              "are classified once", file=sys.stderr)
    return tiles, skipped


def predict_paths(workdir: str | Path, paths: Sequence[str], out_csv: str | Path, *, which: str = BEST,
                  batch_size: int | None = None, overwrite: bool = False, tta: bool = False,
                  group_by: str | None = None, center_crop: int | None = None, map_xy: str | None = None,
                  map_classes: str | None = None, temperature_scaled: bool = False) -> Path:
    """Predict every image under `paths` with the run's `which` checkpoint (`tta`: 8-view average); returns the CSV.

    `workdir` may also be a cross-validated row's folder (`study --folds K`: NAME_Kfold): every fold's
    run classifies each tile and their class probabilities are averaged.

    `group_by` (a regular expression, as spec.data.group_by) also writes OUT_groups.csv: the mean class
    probabilities of each group's tiles, e.g. per slide or patient. `center_crop` keeps each tile's
    central square of that many pixels before resizing, as `evaluate --external` does. `map_xy` (a
    regular expression whose two groups are a tile's x and y) draws OUT_maps/<group>.png, the predicted
    classes laid out as on the slide (flaxbench/tile_map.py), and `map_classes` ('tumor,stroma') a heat
    map of each of those classes' probability beside it. Tiles are decoded, classified and written a
    chunk at a time, so any number of them fits in memory, `batch_size` a forward pass (default: the
    run's spec.train.eval_batch_size). `temperature_scaled` divides each run's logits by the temperature
    it fitted on its validation tiles (results.json) before the softmax: calibrated probabilities, the
    same predicted classes.
    """
    check_center_crop(center_crop)
    workdir, out = Path(workdir), Path(out_csv)
    with contextlib.ExitStack() as open_zips:
        tiles, skipped = expand_paths(paths, open_zips)
        check_group_by(group_by, "--group-by")
        check_map_pattern(map_xy, map_classes)
        group_out = out.with_name(f"{out.stem}_groups.csv") if group_by else None
        maps_out = out.with_name(f"{out.stem}_maps") if map_xy else None
        if out.is_dir():
            raise WorkdirError(f"--out '{out}' is a folder; give a file name such as '{out / 'predictions.csv'}'")
        for path in (out, group_out, maps_out):
            if path is not None and path.exists() and not overwrite:
                raise WorkdirError(f"'{path}' already exists (earlier predictions?); give another --out, or add "
                                   "--overwrite to replace it")
        names = [tile.display for tile in tiles]
        # Every tile needs its slide (and for the maps its place): a tile without fails before any is decoded.
        groups_of = tile_groups(names, group_by, "--group-by") if group_by else None
        tile_maps, cells = map_cells(names, groups_of, map_xy) if map_xy else (None, None)
        for line in skipped:
            print(f"skipped, not a readable image: {line}", file=sys.stderr)
        runs = load_trained_runs(workdir, which)
        run = runs[0]  # all of them alike in classes, tile size and stain target
        temperatures, unscalable = fitted_temperatures(runs, tta) if temperature_scaled else (None, None)
        if unscalable:
            raise WorkdirError(f"--temperature-scaled: {unscalable}; predict without it")
        heat_classes = check_map_classes(map_classes, run.classes)
        other_sizes: collections.Counter = collections.Counter()
        bad: list[tuple[ListedTile, Exception]] = []
        index_of = {id(tile): k for k, tile in enumerate(tiles)}
        decoded = ((index_of[id(tile)], image) for tile, image in
                   decode_tiles(tiles, run.image_size, center_crop, True, bad, other_sizes))
        group_sums: dict[str, list] = {}
        predicted = np.full(len(tiles), -1, np.int64)  # -1: not read
        heat = np.full((len(tiles), len(heat_classes)), np.nan, np.float32)  # --map-class probabilities
        heat_columns = [run.classes.index(name) for name in heat_classes]
        seen = tiles_seen_by(runs)
        count_seen = None if seen is None else (lambda indices, images: seen([names[k] for k in indices], images))
        with atomic_text_file(out) as csv_file:
            writer = csv.writer(csv_file)
            writer.writerow(["path", "predicted_class", *[f"prob_{c}" for c in run.classes]])
            for indices, logits in stream_logits(runs, decoded, "the tiles to predict", tta=tta, batch_size=batch_size,
                                                 expected=len(tiles), temperatures=temperatures,
                                                 on_chunk=count_seen):
                probabilities = np.exp(log_softmax(logits))
                predicted[indices] = probabilities.argmax(axis=1)
                heat[indices] = probabilities[:, heat_columns]
                chunk_names = [names[k] for k in indices]
                writer.writerows([name, run.classes[c], *[f"{x:.6f}" for x in p]]
                                 for name, c, p in zip(chunk_names, predicted[indices], probabilities))
                # A tile without a group fails here, and the CSV is not written.
                groups = tile_groups(chunk_names, group_by, "--group-by") if group_by else ()
                for group, p in zip(groups, probabilities):
                    sums = group_sums.setdefault(group, [0, np.zeros(len(run.classes))])
                    sums[0] += 1
                    sums[1] += p
            for tile, error in bad:
                skipped.append(f"{tile.display} ({error})")
                print(f"skipped, not a readable image: {skipped[-1]}", file=sys.stderr)
            written = int(np.sum(predicted >= 0))
            if not written:  # the CSV is not written either
                raise WorkdirError(f"no readable tiles in {', '.join(map(str, paths))}; nothing predicted, "
                                   "nothing written")
    warning = None if center_crop else resize_warning(run, other_sizes)  # a chosen crop is no accident
    seen_warning = seen and seen.warning(runs_in_words(runs), "a prediction of such a tile says little of unseen ones")
    groups_warning = seen_groups_warning(
        seen_groups_record(training_groups(runs), [names[k] for k in np.flatnonzero(predicted >= 0)]),
        runs_in_words(runs), "a prediction of such a tile says little of new patients")
    for line in (warning, seen_warning, groups_warning):
        if line:
            print(line, file=sys.stderr)
    models = f"{which} checkpoint" if len(runs) == 1 else (
        f"the {which} checkpoints of {len(runs)} runs in '{workdir}' (their class probabilities averaged)")
    scaled = "" if temperatures is None else (
        f", temperature-scaled (T {', '.join(f'{t:.3g}' for t in temperatures)})")
    print(f"predicted {written} tiles ({len(skipped)} skipped) with {models}{' and 8-view TTA' if tta else ''}"
          f"{scaled} -> {out}")
    if group_by:
        _write_group_means(group_out, group_sums, run.classes)
        print(f"mean probabilities of {len(group_sums)} groups ('{group_by}') -> {group_out}")
    if map_xy:
        grids = tile_grids(tile_maps, cells, predicted, -1)
        heat_grids = {name: tile_grids(tile_maps, cells, heat[:, k], np.nan) for k, name in enumerate(heat_classes)}
        write_maps(maps_out, grids, run.classes, heat_grids)
        heat_note = f" with the probability of {', '.join(heat_classes)}" if heat_classes else ""
        print(f"class maps of {len(grids)} {'groups' if group_by else 'tile set'}{heat_note} ('{map_xy}') -> "
              f"{maps_out}")
    return out


def _write_group_means(path: Path, group_sums: dict[str, list], classes: Sequence[str]) -> None:
    """OUT_groups.csv: per group its tile count, the class its mean probabilities favour, and those means."""
    rows = []
    for group in sorted(group_sums):
        count, total = group_sums[group]
        mean = total / count
        rows.append([group, count, classes[int(mean.argmax())], *[f"{x:.6f}" for x in mean]])
    write_text_atomic(path, _csv(["group", "tiles", "predicted_class", *[f"prob_{c}" for c in classes]], rows))


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    """CSV text of a header row and `rows`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()

