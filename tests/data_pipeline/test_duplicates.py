"""Pixel-identical tiles across and within the splits: counted, warned about, refused on request."""

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_pipeline import DataError, load_dataset
from data_pipeline.duplicates import check_duplicates_mode, find_duplicates, tile_digests
from tests.data_pipeline.conftest import split_folders_spec


def _digests(*tiles):
    """Digests of 4x4 tiles filled with the given values."""
    return tile_digests(np.stack([np.full((4, 4, 3), v, np.uint8) for v in tiles]))


def test_copies_are_counted_by_the_split_they_first_occur_in():
    ids = {"train": ("t0", "t1", "t2"), "val": ("v0", "v1"), "test": ("s0", "s1", "s2", "s3")}
    labels = {"train": np.array([0, 1, 1]), "val": np.array([0, 1]), "test": np.array([0, 1, 1, 1])}
    # train: A B B (a repeat); val: A (train's) C; test: A (train's, and val's), C (val's), D, D (a repeat)
    digests = {"train": _digests(1, 2, 2), "val": _digests(1, 3), "test": _digests(1, 3, 4, 4)}
    found = find_duplicates(ids, labels, digests)
    assert found.across_splits == {"val_in_train": 1, "test_in_train": 1, "test_in_val": 1}
    assert found.within_splits == {"train": 1, "val": 0, "test": 1}
    assert found.label_conflicts == 0 and found.held_out_copies == 3
    assert found.copied_ids == {"val": ("v0",), "test": ("s0", "s1")}
    assert found.to_json()["copied_ids"] == {"val": ["v0"], "test": ["s0", "s1"]}
    # copies across splits first, though train's repeat came first
    assert found.examples == ("'v0' = 't0'", "'s0' = 't0'", "'s1' = 'v1'", "'t2' = 't1'", "'s3' = 's2'")
    assert "1 val tile is pixel-identical to train tiles" in found.problem()
    assert "1 test tile is pixel-identical to val tiles" in found.problem()


def test_identical_tiles_under_two_labels_are_a_conflict_and_lead_the_examples():
    ids = {"train": ("tumor/a", "stroma/b", "stroma/c"), "val": ("v",), "test": ("s",)}
    labels = {"train": np.array([0, 1, 1]), "val": np.array([0]), "test": np.array([1])}
    found = find_duplicates(ids, labels, {"train": _digests(1, 1, 2), "val": _digests(3), "test": _digests(4)})
    assert found.label_conflicts == 1 and found.held_out_copies == 0 and found.within_splits["train"] == 1
    assert found.examples[0] == "'tumor/a' = 'stroma/b'"
    assert found.problem() == "1 set of identical tiles carries two or more labels (e.g. 'tumor/a' = 'stroma/b')"


def test_distinct_tiles_have_no_problem():
    ids = {"train": ("a", "b"), "val": ("c",), "test": ("d",)}
    labels = {name: np.zeros(len(names), int) for name, names in ids.items()}
    found = find_duplicates(ids, labels, {"train": _digests(1, 2), "val": _digests(3), "test": _digests(4)})
    assert found.problem() is None and found.examples == () and found.held_out_copies == 0


def test_one_changed_pixel_is_another_tile():
    tile = np.zeros((1, 8, 8, 3), np.uint8)
    changed = tile.copy()
    changed[0, 7, 7, 2] = 1
    assert tile_digests(tile) != tile_digests(changed)
    assert tile_digests(tile) == tile_digests(tile.copy())


@pytest.mark.parametrize("mode", ["warning", None, "", True])
def test_a_bad_mode_names_the_key(mode):
    with pytest.raises(DataError, match=r"spec.data.duplicates is .*'warn', 'error', 'off'"):
        check_duplicates_mode(mode)


def _split_folders(root: Path, kather_sample: Path) -> Path:
    """train/val/test folders of real Kather tiles (tumor, stroma); test holds PNG copies of a train and a val tile."""
    for name, folder in (("tumor", "01_TUMOR"), ("stroma", "02_STROMA")):
        tiles = sorted((kather_sample / folder).iterdir())
        for split, picked in (("train", tiles[:2]), ("val", tiles[2:])):
            (root / split / name).mkdir(parents=True)
            for tile in picked:
                shutil.copy(tile, root / split / name / tile.name)
    (root / "test" / "tumor").mkdir(parents=True)
    (root / "test" / "stroma").mkdir(parents=True)
    train_tile = sorted((root / "train" / "tumor").iterdir())[0]
    val_tile = next((root / "val" / "stroma").iterdir())
    Image.open(train_tile).save(root / "test" / "tumor" / "renamed.png")  # another format, the same pixels
    Image.open(val_tile).save(root / "test" / "stroma" / "renamed.png")
    return root


def test_copies_in_a_real_folder_are_warned_about_and_recorded(tmp_path, kather_sample, caplog):
    root = _split_folders(tmp_path / "tiles", kather_sample)
    with caplog.at_level(logging.WARNING, logger="data_pipeline.duplicates"):
        data = load_dataset(split_folders_spec(root))
    assert data.duplicates.across_splits == {"val_in_train": 0, "test_in_train": 1, "test_in_val": 1}
    assert "'test/tumor/renamed.png' = 'train/tumor/" in data.duplicates.examples[0]
    [message] = [r.getMessage() for r in caplog.records]
    assert f"in folder:{root}, 1 test tile is pixel-identical to train tiles; 1 test tile" in message
    assert "spec.data.duplicates='error'" in message


def test_error_mode_refuses_the_copies_and_off_does_not_look(tmp_path, kather_sample, caplog):
    root = _split_folders(tmp_path / "tiles", kather_sample)
    with pytest.raises(DataError, match=r"1 test tile is pixel-identical to train tiles.*spec.data.group_by"):
        load_dataset(split_folders_spec(root, duplicates="error"))
    with caplog.at_level(logging.WARNING):
        assert load_dataset(split_folders_spec(root, duplicates="off")).duplicates is None
    assert not caplog.records


def test_a_bad_mode_fails_before_any_tile_is_read(tmp_path):
    with pytest.raises(DataError, match="spec.data.duplicates is 'strict'"):
        load_dataset(split_folders_spec(tmp_path / "no such folder", duplicates="strict"))


def test_a_dataset_with_a_split_left_undecoded_is_not_checked(tmp_path, kather_sample):
    root = _split_folders(tmp_path / "tiles", kather_sample)
    assert load_dataset(split_folders_spec(root, duplicates="error"), decode=("test",)).duplicates is None
