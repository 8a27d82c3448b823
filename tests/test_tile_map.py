"""Class maps of slides from tile coordinates in the tiles' names (flaxbench/tile_map.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from flaxbench.errors import WorkdirError
from flaxbench.tile_map import (
    check_map_classes, check_map_pattern, map_cells, map_file_names, tile_grids, write_maps,
)

XY = r"x(\d+)_y(\d+)"


def test_pixel_offsets_and_tile_indices_give_the_same_cells():
    places = ((0, 0), (3, 0), (1, 2), (2, 1))
    in_pixels = [f"s/x{x * 224 + 1000}_y{y * 224 + 448}.png" for x, y in places]
    in_tiles = [f"s/x{x}_y{y}.png" for x, y in places]
    for names in (in_pixels, in_tiles):
        maps, cells = map_cells(names, None, XY)
        assert maps == ["all"] * 4
        assert cells.tolist() == [list(place) for place in places]


def test_a_stride_smaller_than_the_tile_keeps_tiles_neighbours():
    names = [f"x{x}_y0" for x in (0, 112, 224, 336)]  # 224 px tiles cut every 112 px
    assert map_cells(names, None, XY)[1][:, 0].tolist() == [0, 1, 2, 3]


def test_each_group_gets_its_own_grid():
    names = ["a/x500_y500", "a/x724_y500", "b/x0_y0", "b/x0_y224"]
    maps, cells = map_cells(names, ["a", "a", "b", "b"], XY)
    assert cells.tolist() == [[0, 0], [1, 0], [0, 0], [0, 1]]
    grids = tile_grids(maps, cells, np.array([2, -1, 0, 1]), -1)
    assert grids["a"].tolist() == [[2, -1]]  # an unreadable tile keeps its place, empty
    assert grids["b"].tolist() == [[0], [1]]


def test_holes_stay_empty_and_classes_land_on_their_cells():
    names = ["x0_y0", "x2_y0", "x1_y1"]
    maps, cells = map_cells(names, None, XY)
    assert tile_grids(maps, cells, np.array([4, 5, 6]), -1)["all"].tolist() == [[4, -1, 5], [-1, 6, -1]]


@pytest.mark.parametrize("pattern, words", [
    (r"x\d+_y\d+", "has 0 groups"), (r"x(\d+)", "has 1 groups"), (r"x(\d+", "not a valid regular expression"),
])
def test_a_pattern_without_two_groups_is_refused(pattern, words):
    with pytest.raises(WorkdirError, match=words):
        check_map_pattern(pattern)


def test_a_tile_without_coordinates_or_two_tiles_in_one_place_are_named():
    with pytest.raises(WorkdirError, match="finds nothing in tile 'slide/overview.png'"):
        map_cells(["slide/x0_y0.png", "slide/overview.png"], None, XY)
    with pytest.raises(WorkdirError, match="tiles 'a/x0_y0.png' and 'b/x0_y0.png' have the same"):
        map_cells(["a/x0_y0.png", "b/x0_y0.png"], None, XY)
    map_cells(["a/x0_y0.png", "b/x0_y0.png"], ["a", "b"], XY)  # on two slides: two maps
    with pytest.raises(WorkdirError, match="span 5001 x 1 tiles"):
        map_cells(["x0_y0", "x5000_y0", "x4999_y0"], None, XY)


def test_group_names_become_distinct_file_names():
    assert map_file_names(["slide 1", "slide/1", "TCGA-AA-3512"]) == {
        "slide 1": "slide_1.png", "slide/1": "slide_1_2.png", "TCGA-AA-3512": "TCGA-AA-3512.png"}


def test_maps_are_written_whole_and_replace_the_folder(tmp_path):
    folder = tmp_path / "p_maps"
    folder.mkdir()
    (folder / "old.png").write_bytes(b"")
    big = np.full((300, 2500), 1)
    big[0, 0] = -1
    tumor = {"s1": np.array([[0.1, np.nan], [0.5, 1.0]]), "s2": np.where(big > 0, 0.3, np.nan)}
    write_maps(folder, {"s1": np.array([[0, 1], [-1, 2]]), "s2": big}, ["tumor", "stroma", "lympho"], {"tumor": tumor})
    assert sorted(p.name for p in folder.iterdir()) == ["s1.png", "s1_p_tumor.png", "s2.png", "s2_p_tumor.png"]
    assert Image.open(folder / "s2.png").width >= 2 * 2500  # two pixels or more a tile
    assert [p.name for p in tmp_path.iterdir()] == ["p_maps"]  # no staging folder left


def test_probabilities_land_on_their_cells_and_map_classes_are_checked():
    maps, cells = map_cells(["x0_y0", "x1_y1"], None, XY)
    grid = tile_grids(maps, cells, np.array([0.25, 0.75], np.float32), np.nan)["all"]
    np.testing.assert_array_equal(grid, [[0.25, np.nan], [np.nan, 0.75]])
    assert check_map_classes("TUMOR, 02_stroma", ["tumor", "stroma", "lympho"]) == ["tumor", "stroma"]
    assert check_map_classes(None, ["tumor"]) == []
    with pytest.raises(WorkdirError, match="not a class of the run; its classes: tumor, stroma"):
        check_map_classes("adipose", ["tumor", "stroma"])
    with pytest.raises(WorkdirError, match="--map-class needs --map"):
        check_map_pattern(None, "tumor")
