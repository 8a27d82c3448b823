"""Folder and .zip sources: real sample layouts, class matching and every bad input."""

import logging
import zipfile

import numpy as np
import pytest
from PIL import Image

from data_pipeline import DataError, load_dataset
from data_pipeline.sources.folder_source import load_folder

from .helpers import random_tile, write_tiles, zip_folder

KATHER_CLASSES = ("tumor", "stroma", "complex", "lympho", "debris", "mucosa", "adipose", "empty")
STUDY_CLASSES = KATHER_CLASSES[:6]


def test_kather_sample_folder_names_and_order(kather_sample):
    tiles = load_folder(str(kather_sample), None, None, False)
    assert tiles.classes == KATHER_CLASSES
    assert tiles.images.shape == (24, 150, 150, 3) and tiles.images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(tiles.labels), [3] * 8)
    folders = sorted(p.name for p in kather_sample.iterdir())
    assert [tile_id.split("/")[0] for tile_id in tiles.ids[::3]] == folders
    first = np.asarray(Image.open(kather_sample / tiles.ids[0]).convert("RGB"))
    np.testing.assert_array_equal(tiles.images[0], first)


def test_study_classes_select_and_order_labels(kather_sample):
    tiles = load_folder(str(kather_sample), ["mucosa", "TUMOR"], None, False)
    assert tiles.classes == ("mucosa", "tumor")
    assert [tile_id.split("/")[0] for tile_id in tiles.ids] == ["06_MUCOSA"] * 3 + ["01_TUMOR"] * 3
    np.testing.assert_array_equal(tiles.labels, [0, 0, 0, 1, 1, 1])


def test_nct_sample_names(nct_sample):
    tiles = load_folder(str(nct_sample), ["tum", "STR", "adi"], 32, False)
    assert tiles.classes == ("tum", "str", "adi")
    assert tiles.images.shape == (36, 32, 32, 3)
    listed = r"class 'tumor' .*available classes: adi, back, deb, lym, muc, mus, norm, str, tum"
    with pytest.raises(DataError, match=listed):
        load_folder(str(nct_sample), ["tumor"], None, False)


def test_zip_with_extra_top_directory_matches_the_folder(kather_sample, tmp_path):
    zip_path = zip_folder(kather_sample, tmp_path / "kather.zip", top="Kather_texture_2016_image_tiles_5000")
    with zipfile.ZipFile(zip_path, "a") as archive:  # clutter that must be ignored
        archive.writestr("README.txt", "about these tiles")
        archive.writestr("__MACOSX/Kather_texture_2016_image_tiles_5000/01_TUMOR/._x.tif", b"junk")
        archive.writestr("Kather_texture_2016_image_tiles_5000/01_TUMOR/.DS_Store", b"junk")
    from_folder = load_folder(str(kather_sample), STUDY_CLASSES, None, False)
    from_zip = load_folder(str(zip_path), STUDY_CLASSES, None, False)
    assert from_zip.ids == from_folder.ids and from_zip.classes == from_folder.classes
    np.testing.assert_array_equal(from_zip.images, from_folder.images)
    np.testing.assert_array_equal(from_zip.labels, from_folder.labels)
    assert [p.name for p in tmp_path.iterdir()] == ["kather.zip"]  # nothing was extracted


def test_load_dataset_on_a_zip_reports_source_and_sizes(kather_sample, tmp_path):
    zip_path = zip_folder(kather_sample, tmp_path / "tiles.zip")
    data = load_dataset({"source": f"folder:{zip_path}", "split": (8, 8, 8), "image_size": 40})
    assert data.source == f"folder:{zip_path}" and not data.synthetic
    assert data.image_size == (40, 40) and data.train.images.shape == (8, 40, 40, 3)
    for part in (data.train, data.val, data.test):
        np.testing.assert_array_equal(np.bincount(part.labels, minlength=8), [1] * 8)


def test_hidden_files_and_top_level_files_are_ignored(tmp_path):
    root = write_tiles(tmp_path / "tiles", {"a": 2, "b": 2})
    (root / "a" / ".DS_Store").write_bytes(b"x")
    (root / "a" / "._tile_0.png").write_bytes(b"x")
    (root / "b" / "Thumbs.db").write_bytes(b"x")
    (root / "labels.csv").write_text("a,b\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref")
    tiles = load_folder(str(root), None, None, False)
    assert tiles.classes == ("a", "b")
    assert tiles.ids == ("a/tile_0.png", "a/tile_1.png", "b/tile_0.png", "b/tile_1.png")
    assert tiles.skipped_files == ()


def test_missing_folder_and_non_zip_file(tmp_path):
    with pytest.raises(DataError, match=r"'.*nowhere' does not exist"):
        load_dataset({"source": f"folder:{tmp_path / 'nowhere'}"})
    text = tmp_path / "tiles.zip"
    text.write_text("not a zip")
    with pytest.raises(DataError, match="is a file but not a .zip"):
        load_folder(str(text), None, None, False)


def test_empty_folder(tmp_path):
    (tmp_path / "empty" / "tumor").mkdir(parents=True)
    with pytest.raises(DataError, match="no class subfolders with files in '.*empty'"):
        load_folder(str(tmp_path / "empty"), None, None, False)


def test_missing_class_lists_the_available_ones(tmp_path):
    root = write_tiles(tmp_path, {"01_TUMOR": 1, "02_STROMA": 1})
    with pytest.raises(DataError, match="class 'debris' from spec.data.classes .* classes: tumor, stroma"):
        load_folder(str(root), ["tumor", "debris"], None, False)


def test_too_few_images_for_the_split(tmp_path):
    root = write_tiles(tmp_path, {"common": 10, "rare": 1})
    with pytest.raises(DataError, match="class 'rare' has 1 tiles, too few"):
        load_dataset({"source": f"folder:{root}", "split": (0.6, 0.2, 0.2)})


def _write_corrupt_tiff(path):
    """A packbits TIFF cut in half, like an interrupted copy."""
    Image.fromarray(random_tile(99, 16)).save(path, format="TIFF", compression="packbits")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_corrupt_tiff_is_named_and_can_be_skipped(tmp_path, caplog):
    root = write_tiles(tmp_path / "tiles", {"a": 4, "b": 4})
    _write_corrupt_tiff(root / "b" / "broken.tif")
    with pytest.raises(DataError, match=r"bad file '.*b/broken.tif'.*skip_bad_files=True"):
        load_dataset({"source": f"folder:{root}", "split": (0.5, 0.25, 0.25)})
    with caplog.at_level(logging.WARNING):
        data = load_dataset({"source": f"folder:{root}", "split": (0.5, 0.25, 0.25), "skip_bad_files": True})
    assert data.skipped_files == ("b/broken.tif",)
    assert "b/broken.tif" in caplog.text
    assert sum(len(part.ids) for part in (data.train, data.val, data.test)) == 8


def test_non_image_file_in_a_class_folder(tmp_path):
    root = write_tiles(tmp_path / "tiles", {"a": 2})
    (root / "a" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"bad file '.*a/notes.txt': not an image"):
        load_folder(str(root), None, None, False)
    assert load_folder(str(root), None, None, True).skipped_files == ("a/notes.txt",)


def test_bad_file_inside_a_zip_is_named_with_the_zip(tmp_path):
    root = write_tiles(tmp_path / "tiles", {"a": 2})
    _write_corrupt_tiff(root / "a" / "broken.TIF")
    zip_path = zip_folder(root, tmp_path / "tiles.zip")
    with pytest.raises(DataError, match=r"tiles.zip:a/broken.TIF"):
        load_folder(str(zip_path), None, None, False)


def test_mixed_sizes_need_image_size(tmp_path):
    root = write_tiles(tmp_path / "tiles", {"a": 2}, size=8)
    write_tiles(root, {"b": 2}, size=12)
    named = r"'a/tile_0.png' is 8x8 but 'b/tile_0.png' is 12x12; set spec.data.image_size"
    with pytest.raises(DataError, match=named):
        load_folder(str(root), None, None, False)
    assert load_folder(str(root), None, 10, False).images.shape == (4, 10, 10, 3)


def test_all_image_extensions_in_any_case(tmp_path):
    root = tmp_path / "tiles"
    (root / "a").mkdir(parents=True)
    formats = [(".PNG", "PNG"), (".jpeg", "JPEG"), (".JPG", "JPEG"), (".tiff", "TIFF"), (".Tif", "TIFF")]
    for k, (ext, fmt) in enumerate(formats):
        Image.fromarray(random_tile(k)).save(root / "a" / f"t{k}{ext}", format=fmt)
    assert len(load_folder(str(root), None, None, False).ids) == 5


def test_an_empty_class_folder_is_named_unless_the_classes_are_listed(tmp_path):
    root = write_tiles(tmp_path / "tiles", {"adi": 2, "lym": 2})
    (root / "EMPTYCLS").mkdir()
    (root / "EMPTYCLS" / ".DS_Store").write_bytes(b"x")  # clutter is not a tile
    archive = tmp_path / "tiles.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(root.rglob("*")):
            zf.write(path, path.relative_to(tmp_path).as_posix())  # directory entries included
    for source in (root, archive):
        with pytest.raises(DataError, match=r"class folder\(s\) EMPTYCLS in .* hold no files"):
            load_folder(str(source), None, None, False)
        assert load_folder(str(source), ["adi", "lym"], None, False).classes == ("adi", "lym")
