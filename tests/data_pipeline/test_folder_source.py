"""Folder and .zip sources: real sample layouts, class matching and every bad input."""

import io
import logging
import warnings
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


def test_a_deflated_zip_read_by_many_threads_gives_the_folders_tiles(tmp_path, monkeypatch):
    import data_pipeline.parallel

    monkeypatch.setattr(data_pipeline.parallel, "usable_cores", lambda: 8)  # members decompress side by side
    root = write_tiles(tmp_path / "tiles", {"a": 150, "b": 150}, size=40)
    zip_path = zip_folder(root, tmp_path / "tiles.zip", compression=zipfile.ZIP_DEFLATED)
    from_folder, from_zip = load_folder(str(root), None, None, False), load_folder(str(zip_path), None, None, False)
    assert from_zip.ids == from_folder.ids and len(from_zip.ids) == 300
    np.testing.assert_array_equal(from_zip.images, from_folder.images)


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
    text = tmp_path / "tiles.txt"
    text.write_text("not a zip")
    with pytest.raises(DataError, match="is a file but not a .zip"):
        load_folder(str(text), None, None, False)
    truncated = tmp_path / "tiles.zip"
    truncated.write_text("PK\x03\x04 cut off")
    with pytest.raises(DataError, match="tiles.zip' is not a readable zip .*download it again"):
        load_folder(str(truncated), None, None, False)


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


def test_a_class_whose_every_file_is_bad_is_named_as_such(tmp_path):
    root = write_tiles(tmp_path / "tiles", {"a": 4, "b": 4})
    (root / "03_C").mkdir()
    for k in range(3):
        _write_corrupt_tiff(root / "03_C" / f"broken_{k}.tif")
    with pytest.raises(DataError, match=r"class 'c' of folder:.* has no readable tile: all 3 of its files were skipped "
                                        r"as bad \(spec.data.skip_bad_files=True; e.g. 03_C/broken_0.tif\)"):
        load_dataset({"source": f"folder:{root}", "split": (0.5, 0.25, 0.25), "skip_bad_files": True})


def test_non_image_file_in_a_class_folder(tmp_path):
    root = write_tiles(tmp_path / "tiles", {"a": 2, "b": 1})
    (root / "a" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"bad file '.*a/notes.txt': not an image"):
        load_folder(str(root), None, None, False)
    assert load_folder(str(root), None, None, True).skipped_files == ("a/notes.txt",)


def test_bad_file_inside_a_zip_is_named_with_the_zip(tmp_path):
    root = write_tiles(tmp_path / "tiles", {"a": 2, "b": 1})
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
    root = write_tiles(tmp_path / "tiles", {"b": 1})
    (root / "a").mkdir(parents=True)
    formats = [(".PNG", "PNG"), (".jpeg", "JPEG"), (".JPG", "JPEG"), (".tiff", "TIFF"), (".Tif", "TIFF")]
    for k, (ext, fmt) in enumerate(formats):
        Image.fromarray(random_tile(k)).save(root / "a" / f"t{k}{ext}", format=fmt)
    assert len(load_folder(str(root), None, None, False).ids) == 6


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


def test_symlinked_class_folders_and_subfolders_are_read_and_loops_ignored(tmp_path):
    elsewhere = write_tiles(tmp_path / "elsewhere", {"b": 2, "slide": 3})
    root = write_tiles(tmp_path / "tiles", {"a": 2})
    (root / "b").symlink_to(elsewhere / "b", target_is_directory=True)
    (root / "a" / "slide").symlink_to(elsewhere / "slide", target_is_directory=True)
    (root / "a" / "loop").symlink_to(root / "a", target_is_directory=True)
    tiles = load_folder(str(root), None, None, False)
    assert tiles.classes == ("a", "b")
    np.testing.assert_array_equal(np.bincount(tiles.labels), [5, 2])
    (root / "a" / "to_b").symlink_to(root / "b", target_is_directory=True)  # b's tiles would count twice
    with pytest.raises(DataError, match=r"'.*a/to_b' and '.*tiles/b' are the same folder"):
        load_folder(str(root), None, None, False)


def test_a_wrapper_folder_with_stray_files_is_explained_when_classes_are_listed(tmp_path):
    root = write_tiles(tmp_path / "tiles" / "Kather", {"01_TUMOR": 2, "02_STROMA": 2}).parent
    Image.fromarray(random_tile(0)).save(root / "Kather" / "overview.png")
    with pytest.raises(DataError, match=r"single class folder, 'Kather'.*move .*overview.png"):
        load_folder(str(root), ["tumor", "stroma"], None, False)


def test_one_class_folder_with_stray_files_is_explained(tmp_path):
    root = write_tiles(tmp_path / "tiles" / "MyTiles", {"01_TUMOR": 2, "02_STROMA": 2}).parent
    Image.fromarray(random_tile(0)).save(root / "MyTiles" / "overview.png")
    with pytest.raises(DataError, match=r"single class folder, 'MyTiles'.* subfolders \(01_TUMOR, 02_STROMA\).*"
                                        r"point spec.data.source at .*MyTiles' or move .*overview.png"):
        load_folder(str(root), None, None, False)


def test_a_zip_of_class_folders_two_folders_deep_says_how_to_zip_them(tmp_path):
    root = write_tiles(tmp_path / "tiles", {"01_TUMOR": 2, "02_STROMA": 2})
    archive = zip_folder(root, tmp_path / "nested.zip", top="outer/inner")
    with pytest.raises(DataError, match=r"single class folder, 'inner'.* subfolders \(01_TUMOR, 02_STROMA\): if these "
                                        r"are the classes, zip the folders in 'outer/inner/' at the archive's top\.$"):
        load_folder(str(archive), None, None, False)


def test_a_single_selected_class_is_refused(tmp_path):
    root = write_tiles(tmp_path / "tiles", {"a": 4, "b": 4})
    with pytest.raises(DataError, match=r"single class \('a'\).* at least two"):
        load_dataset({"source": f"folder:{root}", "classes": ["a"], "split": (0.5, 0.25, 0.25)})


def test_a_requested_class_with_an_empty_folder_says_so(tmp_path):
    root = write_tiles(tmp_path / "tiles", {"a": 2, "b": 2})
    (root / "03_C").mkdir()
    with pytest.raises(DataError, match=r"class 'c' .*its folder '03_C' .* holds no files"):
        load_folder(str(root), ["a", "c"], None, False)


def test_a_decomposed_unicode_folder_name_matches_a_composed_request(tmp_path):
    root = write_tiles(tmp_path / "tiles", {"a": 2, "stro\u0302ma": 2})  # o + combining circumflex
    assert load_folder(str(root), ["a", "str\u00f4ma"], None, False).classes == ("a", "str\u00f4ma")


def _png_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(random_tile(seed)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_zip_names_are_normalised_and_duplicates_refused(tmp_path):
    windows = tmp_path / "windows.zip"
    with zipfile.ZipFile(windows, "w") as archive:
        for k, name in enumerate(["a\\t0.png", "a\\t1.png", "./b/t0.png", "./b/t1.png"]):
            archive.writestr(name, _png_bytes(k))
    assert load_folder(str(windows), None, None, False).ids == ("a/t0.png", "a/t1.png", "b/t0.png", "b/t1.png")
    duplicated = tmp_path / "dup.zip"
    with zipfile.ZipFile(duplicated, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it is asked to write
        for k, name in enumerate(["a/t0.png", "a/t1.png", "a/t1.png", "b/t0.png"]):
            archive.writestr(name, _png_bytes(k))
    with pytest.raises(DataError, match=r"holds 'a/t1.png' twice"):
        load_folder(str(duplicated), None, None, False)


def _without_utf8_flags(archive: bytes) -> bytes:
    """A zip's bytes with the UTF-8 flag of every name cleared, as Info-ZIP's `zip` writes UTF-8 names."""
    raw = bytearray(archive)
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local and central headers
        start = raw.find(signature)
        while start >= 0:
            raw[start + flags_at + 1] &= ~0x08  # 0x800 of the little-endian flags: bit 3 of their second byte
            start = raw.find(signature, start + 4)
    return bytes(raw)


def test_utf8_names_of_a_zip_without_its_utf8_flag_are_read_as_written(tmp_path):
    archive = tmp_path / "tiles.zip"
    names = ["Stróma/t0.png", "Stróma/t1.png", "débris/t0.png", "débris/t1.png"]
    with zipfile.ZipFile(archive, "w") as zf:
        for k, name in enumerate(names):
            zf.writestr(name, _png_bytes(k))
    archive.write_bytes(_without_utf8_flags(archive.read_bytes()))
    with zipfile.ZipFile(archive) as zf:
        assert zf.namelist()[2] == "d├⌐bris/t0.png"  # as zipfile itself reads it
    tiles = load_folder(str(archive), None, None, False)
    assert tiles.ids == tuple(names) and tiles.classes == ("stróma", "débris")


def test_a_damaged_zip_member_is_a_bad_file(tmp_path):
    root = write_tiles(tmp_path / "tiles", {"a": 2, "b": 2})
    archive = tmp_path / "tiles.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*.png")):
            zf.write(path, path.relative_to(root).as_posix())
    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("a/tile_0.png")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start:start + 40] = bytes(40)  # zero the start of the compressed stream
    archive.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"bad file '.*tiles.zip:a/tile_0.png': cannot read it from the zip"):
        load_folder(str(archive), None, None, False)
    assert load_folder(str(archive), None, None, True).skipped_files == ("a/tile_0.png",)


def test_resizes_that_stretch_tiles_or_mix_their_sizes_are_warned_about_once(tmp_path, caplog):
    root = write_tiles(tmp_path / "tiles", {"a": 8, "b": 8}, size=24)
    Image.fromarray(random_tile(50, 40)[:20]).save(root / "a" / "wide.png")  # 40 wide, 20 high
    Image.fromarray(random_tile(51, 40)).save(root / "b" / "large.png")
    spec = {"source": f"folder:{root}", "classes": None, "split": (0.5, 0.25, 0.25), "image_size": 24}
    with caplog.at_level(logging.WARNING):
        load_dataset(spec)
    stretched = [r.getMessage() for r in caplog.records if "not square" in r.getMessage()]
    assert stretched == [f"in folder:{root}, 1 tile is not square (e.g. 40x20 px) and was stretched to 24x24 px "
                         "(spec.data.image_size); crop them square to keep their shapes"]
    mixed = [r.getMessage() for r in caplog.records if "different magnifications" in r.getMessage()]
    assert len(mixed) == 1 and "tiles of 3 sizes (16 at 24x24, 1 at 40x20, 1 at 40x40)" in mixed[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_dataset({**spec, "source": f"folder:{write_tiles(tmp_path / 'even', {'a': 4, 'b': 4}, size=40)}"})
    assert not caplog.records  # every tile resized alike: as spec.data.image_size asks
