"""Gathering decoded tiles into one array and reordering its rows in place."""

import numpy as np
import pytest

from data_pipeline import DataError
from data_pipeline.sources.tiles import collect_tiles, permute_rows_in_place


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [1, 2, 3, 0], [2, 0, 1, 3], "random"])
def test_permuting_in_place_gives_what_indexing_gives(order):
    rng = np.random.default_rng(0)
    order = rng.permutation(57) if order == "random" else np.asarray(order)
    rows = rng.integers(0, 256, (len(order), 5, 4, 3), dtype=np.uint8)
    expected = rows[order]
    permute_rows_in_place(rows, order)
    np.testing.assert_array_equal(rows, expected)


def test_collected_tiles_fill_an_array_of_the_tiles_received():
    tiles = [(f"t{k}", k % 2, np.full((6, 4, 3), k, np.uint8)) for k in range(5)]
    images, labels, ids = collect_tiles(iter(tiles), 9, "here")  # 9 listed, 5 readable
    assert images.shape == (5, 6, 4, 3) and ids == ["t0", "t1", "t2", "t3", "t4"]
    assert labels.dtype == np.int32 and labels.tolist() == [0, 1, 0, 1, 0]
    np.testing.assert_array_equal(images[:, 0, 0, 0], np.arange(5))
    with pytest.raises(DataError, match="here has no readable tiles"):
        collect_tiles(iter([]), 3, "here")
    with pytest.raises(DataError, match=r"'t0' is 4x6 but 'odd' is 5x6"):
        collect_tiles(iter([*tiles, ("odd", 0, np.zeros((6, 5, 3), np.uint8))]), 9, "here")
