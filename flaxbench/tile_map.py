"""Maps of a slide's predicted classes, laid out by the tile coordinates in the tiles' names.

    python -m flaxbench predict --workdir runs/resnet18 tiles/ --group-by 'slide_\\d+' --map 'x(\\d+)_y(\\d+)'

`--map` is a regular expression with two groups, the x and y of a tile, searched in its path as
given (e.g. `slide_07/x1024_y2048.png`). Coordinates may be pixel offsets or tile indices: the
step between tiles is the greatest common divisor of the offsets along each axis, so tiles cut
with a stride show as neighbours. One PNG per group (per slide with `--group-by`, else one for
all tiles) shows each tile's predicted class as one cell; cells without a readable tile stay white.
`--map-class tumor` adds a heat map of each slide's tumor probability per tile.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from data_pipeline import canonical_class_name
from flaxbench.errors import WorkdirError

MAX_CELLS = 4096  # cells along a side: more means the pattern reads something other than tile positions
ALL_TILES = "all"  # the map's name without --group-by


def check_map_pattern(pattern: str | None, map_classes: str | None = None) -> re.Pattern | None:
    """`--map` compiled (None without one); WorkdirError unless it is a regular expression with two groups.

    `map_classes` (--map-class) without a pattern is an error too: its heat maps need the coordinates.
    """
    if pattern is None:
        if map_classes:
            raise WorkdirError("--map-class needs --map XY_REGEX, the tiles' coordinates to lay the map out by")
        return None
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise WorkdirError(f"--map '{pattern}' is not a valid regular expression ({error})") from None
    if regex.groups != 2:
        raise WorkdirError(f"--map '{pattern}' has {regex.groups} groups; give two, the x and y of a tile in its "
                           r"path, e.g. --map 'x(\d+)_y(\d+)'")
    return regex


def tile_positions(names: Sequence[str], pattern: str) -> np.ndarray:
    """(x, y) integers of each tile name by `pattern`'s two groups; WorkdirError naming a tile without them."""
    regex = check_map_pattern(pattern)
    positions = np.empty((len(names), 2), np.int64)
    for k, name in enumerate(names):
        match = regex.search(name)
        try:
            positions[k] = (int(match.group(1)), int(match.group(2)))
        except (AttributeError, TypeError, ValueError):
            found = "nothing" if match is None else f"{match.group(1)!r} and {match.group(2)!r}"
            raise WorkdirError(f"--map '{pattern}' finds {found} in tile '{name}'; every tile needs its x and y as "
                               "whole numbers in its path") from None
    return positions


def grid_cells(positions: np.ndarray) -> np.ndarray:
    """(column, row) of each (x, y): offsets from the smallest, divided by their greatest common divisor per axis."""
    offsets = positions - positions.min(axis=0)
    steps = np.maximum(np.gcd.reduce(offsets, axis=0), 1)
    cells = offsets // steps
    columns, rows = cells.max(axis=0) + 1
    if max(columns, rows) > MAX_CELLS:
        raise WorkdirError(f"--map's coordinates span {columns} x {rows} tiles (steps {steps[0]} and {steps[1]}); "
                           "check that its two groups are each tile's x and y")
    return cells


def check_one_tile_per_cell(names: Sequence[str], cells: np.ndarray) -> None:
    """WorkdirError naming two tiles of one map that fall in one cell (the same coordinates)."""
    first: dict[tuple[int, int], str] = {}
    for name, cell in zip(names, map(tuple, cells.tolist())):
        if cell in first:
            raise WorkdirError(f"tiles '{first[cell]}' and '{name}' have the same --map coordinates; give each "
                               "map's tiles once (with --group-by naming the slide of each)")
        first[cell] = name


def tile_grids(maps: Sequence[str], cells: np.ndarray, values: np.ndarray, empty: Any) -> dict[str, np.ndarray]:
    """{map: (rows, columns) grid}: tile k's `values[k]` at `cells[k]` of map `maps[k]`, `empty` where no tile is.

    A tile that could not be read (its value `empty`) still counts for the map's extent, so every
    map of a slide has the same shape.
    """
    grids = {}
    for name in sorted(set(maps)):
        rows = np.flatnonzero(np.asarray(maps) == name)
        columns, height = cells[rows].max(axis=0) + 1
        grid = np.full((height, columns), empty, values.dtype)
        grid[cells[rows, 1], cells[rows, 0]] = values[rows]
        grids[name] = grid
    return grids


def draw_class_map(path: Path, grid: np.ndarray, classes: Sequence[str], title: str) -> None:
    """Save a grid of class indices as a PNG: a colour per class (as in every map), white where no tile is, a legend."""
    figure, axes = _map_figure(grid)
    colours = [f"C{k % 10}" for k in range(len(classes))]
    axes.imshow(np.ma.masked_less(grid, 0), cmap=ListedColormap(colours), vmin=-0.5, vmax=len(classes) - 0.5,
                interpolation="nearest")
    counts = np.bincount(grid[grid >= 0], minlength=len(classes))
    axes.set_title(f"{title}: {int(counts.sum())} tiles")
    axes.legend(handles=[Patch(color=colours[k], label=f"{name} ({counts[k]})") for k, name in enumerate(classes)],
                loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _save(figure, path, grid)


def draw_probability_map(path: Path, grid: np.ndarray, class_name: str, title: str) -> None:
    """Save a grid of one class's probabilities as a PNG heat map from 0 to 1, white where no tile is."""
    figure, axes = _map_figure(grid)
    image = axes.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_title(f"{title}: probability of {class_name}, {int(np.isfinite(grid).sum())} tiles")
    figure.colorbar(image, ax=axes, label=f"P({class_name})", shrink=0.8)
    _save(figure, path, grid)


def _map_figure(grid: np.ndarray) -> tuple[Figure, Any]:
    """A figure sized for `grid` (wider grids wider, up to 12 inches of map) and its axes, without ticks."""
    rows, columns = grid.shape
    width = min(12.0, max(4.0, columns / 20))
    figure = Figure(figsize=(width + 2.5, max(3.0, width * rows / columns)), layout="constrained")
    axes = figure.add_subplot()
    axes.set_xticks([])
    axes.set_yticks([])
    return figure, axes


def _save(figure: Figure, path: Path, grid: np.ndarray) -> None:
    """Save `figure` at a resolution that gives every cell of `grid` two pixels or more."""
    rows, columns = grid.shape
    width, height = figure.get_size_inches()
    # so that no tile of a large slide falls between pixels (the map takes most of the figure)
    figure.savefig(path, dpi=max(100, math.ceil(2 * columns / (width - 2.5)), math.ceil(2 * rows / height)))


def map_file_names(groups: Sequence[str]) -> dict[str, str]:
    """A distinct PNG file name for each group: its name with characters unsafe in file names replaced."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for group in groups:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", group).strip("._") or "group"
        name, k = f"{stem}.png", 2
        while name in taken:
            name, k = f"{stem}_{k}.png", k + 1
        taken.add(name)
        names[group] = name
    return names


def write_maps(folder: Path, class_grids: dict[str, np.ndarray], classes: Sequence[str],
               probability_grids: dict[str, dict[str, np.ndarray]] | None = None) -> Path:
    """`folder` with <map>.png per class grid and <map>_p_<class>.png per probability grid {class: {map: grid}}.

    The folder is replaced whole once every map is drawn.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, file_name in map_file_names(sorted(class_grids)).items():
            draw_class_map(staging / file_name, class_grids[name], classes, name)
            for class_name, grids in (probability_grids or {}).items():
                draw_probability_map(staging / f"{Path(file_name).stem}_p_{class_name}.png", grids[name],
                                     class_name, name)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def check_map_classes(text: str | None, classes: Sequence[str]) -> list[str]:
    """--map-class CLASS,... as the run's class names (canonical); WorkdirError naming one the run does not have."""
    if not text:
        return []
    chosen = []
    for entry in text.split(","):
        name = canonical_class_name(entry)
        if name not in classes:
            raise WorkdirError(f"--map-class '{entry.strip()}' is not a class of the run; its classes: "
                               f"{', '.join(classes)}")
        chosen.append(name)
    return chosen


def map_cells(names: Sequence[str], groups: Sequence[str] | None, pattern: str) -> tuple[list[str], np.ndarray]:
    """(map of each tile, (column, row) of each tile): every group (one map without `groups`) on its own grid.

    WorkdirError for a tile without coordinates, two tiles in one cell, or a grid over MAX_CELLS a side.
    """
    positions = tile_positions(names, pattern)
    maps = list(groups) if groups is not None else [ALL_TILES] * len(names)
    cells = np.zeros_like(positions)
    members: dict[str, list[int]] = {}
    for k, group in enumerate(maps):
        members.setdefault(group, []).append(k)
    for rows in members.values():
        cells[rows] = grid_cells(positions[rows])
        check_one_tile_per_cell([names[k] for k in rows], cells[rows])
    return maps, cells
