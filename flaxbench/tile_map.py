"""Maps of a slide's predicted classes, laid out by the tile coordinates in the tiles' names.

    python -m flaxbench predict --workdir runs/resnet18 tiles/ --group-by 'slide_\\d+' --map 'x(\\d+)_y(\\d+)'

`--map` is a regular expression with two groups, the x and y of a tile, searched in its path as
given (e.g. `slide_07/x1024_y2048.png`). Coordinates may be pixel offsets or tile indices: the
step between tiles is the greatest common divisor of the offsets along each axis, so tiles cut
with a stride show as neighbours. One PNG per group (per slide with `--group-by`, else one for
all tiles) shows each tile's predicted class as one cell; cells without a readable tile stay white.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from flaxbench.errors import WorkdirError

MAX_CELLS = 4096  # cells along a side: more means the pattern reads something other than tile positions
ALL_TILES = "all"  # the map's name without --group-by


def check_map_pattern(pattern: str | None) -> re.Pattern | None:
    """`--map` compiled (None without one); WorkdirError unless it is a regular expression with two groups."""
    if pattern is None:
        return None
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise WorkdirError(f"--map {pattern!r} is not a valid regular expression ({error})") from None
    if regex.groups != 2:
        raise WorkdirError(f"--map {pattern!r} has {regex.groups} groups; give two, the x and y of a tile in its "
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
            raise WorkdirError(f"--map {pattern!r} finds {found} in tile '{name}'; every tile needs its x and y as "
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


def class_grids(maps: Sequence[str], cells: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """{map: (rows, columns) class indices}: tile k's `predicted[k]` at `cells[k]` of map `maps[k]`; -1 where none is.

    A tile that could not be read (`predicted` -1) still counts for the map's extent, so every map
    of a slide has the same shape.
    """
    grids = {}
    for name in sorted(set(maps)):
        rows = np.flatnonzero(np.asarray(maps) == name)
        columns, height = cells[rows].max(axis=0) + 1
        grid = np.full((height, columns), -1, np.int64)
        grid[cells[rows, 1], cells[rows, 0]] = predicted[rows]
        grids[name] = grid
    return grids


def draw_class_map(path: Path, grid: np.ndarray, classes: Sequence[str], title: str) -> None:
    """Save `grid` as a PNG: a colour per class (the same in every map), white where no tile is, with a legend."""
    rows, columns = grid.shape
    width = min(12.0, max(4.0, columns / 20))
    figure = Figure(figsize=(width + 2.5, max(3.0, width * rows / columns)), layout="constrained")
    axes = figure.add_subplot()
    colours = [f"C{k % 10}" for k in range(len(classes))]
    axes.imshow(np.ma.masked_less(grid, 0), cmap=ListedColormap(colours), vmin=-0.5, vmax=len(classes) - 0.5,
                interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])
    counts = np.bincount(grid[grid >= 0], minlength=len(classes))
    axes.set_title(f"{title}: {int(counts.sum())} tiles")
    axes.legend(handles=[Patch(color=colours[k], label=f"{name} ({counts[k]})") for k, name in enumerate(classes)],
                loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    # at least two pixels a cell, so that no tile of a large slide falls between pixels
    figure.savefig(path, dpi=max(100, math.ceil(2 * columns / width), math.ceil(2 * rows / figure.get_figheight())))


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


def write_class_maps(folder: Path, grids: dict[str, np.ndarray], classes: Sequence[str]) -> Path:
    """One PNG per map {name: class grid} in `folder`, which is replaced whole once every map is drawn."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, file_name in map_file_names(sorted(grids)).items():
            draw_class_map(staging / file_name, grids[name], classes, name)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


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
