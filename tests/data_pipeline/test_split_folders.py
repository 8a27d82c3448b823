"""Sources that come split already (ROOT/train/<class>, ROOT/test/<class>, ...): spec.data.split names the folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from data_pipeline import DataError, load_dataset

from .helpers import write_tiles, zip_folder


def split_tree(nct_sample: Path, root: Path, folders: dict[str, slice]) -> Path:
    """Copy the NCT sample's tiles into root/<split>/<class>/, each split taking the tiles `folders[split]` picks."""
    for class_dir in sorted(p for p in nct_sample.iterdir() if p.is_dir()):
        tiles = sorted(class_dir.iterdir())
        for split, which in folders.items():
            (root / split / class_dir.name).mkdir(parents=True)
            for tile in tiles[which]:
                shutil.copy(tile, root / split / class_dir.name / tile.name)
    return root


def load(root: Path, split, **data):
    """load_dataset on folder `root` with `split`, 32 px tiles, all classes unless `data` says otherwise."""
    return load_dataset({"source": f"folder:{root}", "split": split, "image_size": 32, "classes": None, **data})


def test_train_val_test_folders_are_the_splits(nct_sample, tmp_path):
    root = split_tree(nct_sample, tmp_path / "tiles", {"train": slice(0, 6), "val": slice(6, 8), "test": slice(8, 12)})
    data = load(root, ("train", "val", "test"))
    assert data.classes == ("adi", "back", "deb", "lym", "muc", "mus", "norm", "str", "tum")
    for split, name, per_class in ((data.train, "train", 6), (data.val, "val", 2), (data.test, "test", 4)):
        assert {tile_id.split("/")[0] for tile_id in split.ids} == {name}
        np.testing.assert_array_equal(np.bincount(split.labels), [per_class] * 9)
        files = sorted(p.relative_to(root).as_posix() for p in (root / name).rglob("*.tif"))
        assert sorted(split.ids) == files  # every tile of the folder, none of another
    tumor = data.test.ids[list(data.test.labels).index(8)]
    assert tumor.startswith("test/TUM/")


def test_val_held_out_of_the_train_folder(nct_sample, tmp_path):
    root = split_tree(nct_sample, tmp_path / "tiles", {"train": slice(0, 8), "test": slice(8, 12)})
    data = load(root, ("train", 0.25, "test"))
    assert (len(data.train.ids), len(data.val.ids), len(data.test.ids)) == (54, 18, 36)
    assert not set(data.train.ids) & set(data.val.ids)
    assert {i.split("/")[0] for i in data.train.ids + data.val.ids} == {"train"}
    np.testing.assert_array_equal(np.bincount(data.val.labels), [2] * 9)  # stratified
    counted = load(root, ("train", 9, "test"))
    assert len(counted.val.ids) == 9 and counted.test.ids == data.test.ids
    assert load(root, ("train", 0.25, "test"), split_seed=1).val.ids != data.val.ids


def test_a_zip_of_split_folders_reads_the_same_tiles(nct_sample, tmp_path):
    root = split_tree(nct_sample, tmp_path / "tiles", {"train": slice(0, 8), "test": slice(8, 12)})
    archive = zip_folder(root, tmp_path / "tiles.zip", top="NCT")
    from_folder, from_zip = load(root, ("train", 0.25, "test")), load(archive, ("train", 0.25, "test"))
    for a, b in zip((from_folder.train, from_folder.val, from_folder.test), (from_zip.train, from_zip.val, from_zip.test)):
        assert a.ids == b.ids
        np.testing.assert_array_equal(a.images, b.images)


def test_split_folders_read_as_classes_are_refused_with_the_fix(nct_sample, tmp_path):
    root = split_tree(nct_sample, tmp_path / "tiles", {"Training": slice(0, 8), "Testing": slice(8, 12)})
    with pytest.raises(DataError, match=r"holds split folders \(Testing, Training\).*\('Training', 0.15, 'Testing'\)"):
        load(root, (0.7, 0.15, 0.15))
    with pytest.raises(DataError, match="holds split folders"):  # before the requested classes are looked for
        load(root, (0.7, 0.15, 0.15), classes=("tum", "adi"))


def test_split_folders_with_other_classes_are_named(tmp_path):
    write_tiles(tmp_path / "train", {"a": 3, "b": 3, "c": 3})
    write_tiles(tmp_path / "test", {"a": 2, "b": 2, "d": 2})
    with pytest.raises(DataError, match="folder 'test' has other classes than 'train' .it lacks c; it has d"):
        load(tmp_path, ("train", 0.3, "test"))
    data = load(tmp_path, ("train", 0.3, "test"), classes=("b", "a"))
    assert data.classes == ("b", "a")
    assert all(tile_id.split("/")[1] == ("b", "a")[label] for tile_id, label in zip(data.test.ids, data.test.labels))


def test_class_folders_in_another_order_keep_the_train_labels(tmp_path):
    write_tiles(tmp_path / "train", {"1_x": 3, "2_y": 3})
    write_tiles(tmp_path / "test", {"2_x": 2, "1_y": 2})  # numeric prefixes sort the folders the other way
    data = load(tmp_path, ("train", 0.34, "test"))
    assert data.classes == ("x", "y")
    assert all(tile_id.split("/")[1][2:] == data.classes[label] for tile_id, label in zip(data.test.ids, data.test.labels))


@pytest.mark.parametrize("split, message", [
    (("train", "val", "test"), "has no folder 'val' with files, which spec.data.split names; its folders: test, train"),
    (("train", 0, "test"), "the val share must be a fraction in"),
    (("train", 1.5, "test"), "the val share must be a fraction in"),
    (("train", 0.2, "train"), "names one split of the source twice"),
    (("train", "test"), "name the source's train and test splits"),
    (("train", 7, "test"), "holds out 7 tiles of .* folder 'train' for validation, but it has 6"),
    (("train", 0.1, "test"), "holding out 0.1 of .* folder 'train' for validation: class 'a' has 3 tiles, too few"),
])
def test_bad_split_folder_specs_are_one_clear_error(tmp_path, split, message):
    write_tiles(tmp_path / "train", {"a": 3, "b": 3})
    write_tiles(tmp_path / "test", {"a": 2, "b": 2})
    with pytest.raises(DataError, match=message):
        load(tmp_path, split)


def test_split_folders_need_a_folder_source():
    with pytest.raises(DataError, match="names splits of the source, which only 'folder:PATH' .its folders. and 'tfds:NAME' sources have"):
        load_dataset({"source": "synthetic", "split": ("train", 0.2, "test")})


def test_split_folders_of_other_tile_sizes_need_image_size(tmp_path):
    write_tiles(tmp_path / "train", {"a": 3, "b": 3}, size=8)
    write_tiles(tmp_path / "test", {"a": 2, "b": 2}, size=10)
    with pytest.raises(DataError, match="folder 'test' and .* folder 'train' differ in size: 'test/a/tile_0.png' is 10x10 px, "
                       "'train/.*' 8x8; set spec.data.image_size"):
        load(tmp_path, ("train", 0.34, "test"), image_size=None)
    with pytest.raises(DataError, match="folder 'test' and .* folder 'train' differ in size"):  # decoded, then split
        load(tmp_path, ("train", 0.34, "test"), image_size=None, skip_bad_files=True)
    assert load(tmp_path, ("train", 0.34, "test"), image_size=8).image_size == (8, 8)
