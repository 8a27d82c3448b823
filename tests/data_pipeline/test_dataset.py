"""`load_dataset`: spec.data parsing, source dispatch and the assembled TileDataset."""

import re
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

import data_pipeline
from data_pipeline import DataError, Split, TileDataset, load_dataset

from .helpers import write_tiles


def _config(**overrides):
    """A spec.data-like ConfigDict with the study keys and tiny synthetic data."""
    return ml_collections.ConfigDict(
        {
            "source": "synthetic",
            "classes": ("tumor", "stroma"),
            "split": (4, 2, 2),
            "split_seed": 0,
            "image_size": None,
            "skip_bad_files": False,
            "tfds_data_dir": None,
            "synthetic_per_class": 4,
            "synthetic_size": 16,
            "augment": ("hflip", "vflip", "rot90"),
            "normalize": "unit",
            **overrides,
        }
    )


def test_config_dict_gives_a_complete_tile_dataset():
    data = load_dataset(_config())
    assert isinstance(data, TileDataset)
    assert all(isinstance(part, Split) for part in (data.train, data.val, data.test))
    assert data.classes == ("tumor", "stroma") and data.image_size == (16, 16) and data.skipped_files == ()
    for part, size in ((data.train, 4), (data.val, 2), (data.test, 2)):
        assert part.images.shape == (size, 16, 16, 3) and part.images.dtype == np.uint8
        assert part.labels.dtype == np.int32 and len(part.ids) == size
        np.testing.assert_array_equal(np.bincount(part.labels), [size // 2] * 2)


def test_split_seed_changes_membership_and_nothing_else():
    first, again, other = (load_dataset(_config(split_seed=s)) for s in (0, 0, 1))
    assert first.train.ids == again.train.ids
    np.testing.assert_array_equal(first.train.images, again.train.images)
    assert set(first.train.ids) != set(other.train.ids)
    everything = set(first.train.ids + first.val.ids + first.test.ids)
    assert everything == set(other.train.ids + other.val.ids + other.test.ids)


@pytest.mark.parametrize("source", ["tfds", "folder:", "zip:/tmp/x.zip", "Synthetic", "", 7])
def test_bad_source_strings_list_the_forms(source):
    forms = r"spec.data.source.*'tfds:colorectal_histology'.*'folder:PATH'.*'synthetic'"
    with pytest.raises(DataError, match=forms):
        load_dataset(_config(source=source))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"augment": ("hflip", "twist")}, r"unknown augmentation 'twist' in spec.data.augment"),
        ({"normalize": "zscore"}, r"unknown spec.data.normalize 'zscore'; known: imagenet, unit, centered"),
        ({"image_size": 0}, r"spec.data.image_size must be a positive integer or None, got 0"),
        ({"split": (0.5, 0.6, 0.0)}, r"sum to at most 1"),
    ],
)
def test_bad_keys_fail_before_any_decoding(overrides, message):
    with pytest.raises(DataError, match=message):
        load_dataset(_config(**overrides))


@pytest.mark.parametrize("augment, ops", [("hflip", ("hflip",)), (None, ()), (["vflip", "rot90"], ("vflip", "rot90"))])
def test_augment_takes_one_name_a_sequence_of_them_or_none(augment, ops):
    assert data_pipeline.augment_ops({"augment": augment}) == ops


def test_skip_bad_files_must_be_a_bool(tmp_path):
    root = write_tiles(tmp_path, {"a": 4})
    with pytest.raises(DataError, match="skip_bad_files must be True or False, got 'yes'"):
        load_dataset({"source": f"folder:{root}", "skip_bad_files": "yes"})


def test_folder_source_is_made_absolute(tmp_path, monkeypatch):
    write_tiles(tmp_path / "tiles", {"a": 4, "b": 4})
    monkeypatch.chdir(tmp_path)
    data = load_dataset({"source": "folder:tiles", "split": (0.5, 0.25, 0.25)})
    assert data.source == f"folder:{tmp_path / 'tiles'}"


def test_kather_sample_end_to_end(kather_sample):
    study = ("tumor", "stroma", "complex", "lympho", "debris", "mucosa")
    data = load_dataset(_config(source=f"folder:{kather_sample}", classes=study, split=(6, 6, 6)))
    assert data.image_size == (150, 150)
    for part in (data.train, data.val, data.test):
        np.testing.assert_array_equal(np.bincount(part.labels), [1] * 6)
    assert not set(data.train.ids) & set(data.test.ids)


def test_last_dataset_decodes_again_only_when_the_tiles_asked_for_change(monkeypatch):
    loads = []
    monkeypatch.setattr(data_pipeline.last_dataset, "load_dataset", lambda cfg: loads.append(cfg) or load_dataset(cfg))
    datasets = data_pipeline.LastDataset()
    first = datasets.load(_config())
    assert datasets.load_time_s > 0
    # Augmentation and normalisation run on device: the same tiles serve both rows.
    assert datasets.load(_config(normalize="imagenet", augment=())) is first and len(loads) == 1
    assert datasets.load_time_s is None
    other_split = datasets.load(_config(split_seed=1))
    assert len(loads) == 2 and other_split.train.ids != first.train.ids
    assert datasets.load(_config(split_seed=1)) is other_split and len(loads) == 2
    assert datasets.load(_config()) is not first and len(loads) == 3  # only the last dataset is kept
    with pytest.raises(DataError, match="unknown spec.data.normalize 'zscore'"):
        datasets.load(_config(normalize="zscore"))  # device keys are checked even when the tiles are reused


def _write_numbered_tiles(root: Path, per_class: dict[str, int], size: int = 8) -> Path:
    """Tiles whose every pixel is their number, named by it: tile_<number>.png."""
    number = 0
    for name, count in per_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            Image.fromarray(np.full((size, size, 3), number, np.uint8)).save(root / name / f"tile_{number}.png")
            number += 1
    return root


def _assert_tiles_match_ids_and_labels(data: TileDataset) -> None:
    for split in (data.train, data.val, data.test):
        for image, tile_id, label in zip(split.images, split.ids, split.labels):
            folder, name = tile_id.split("/")[-2:]
            assert np.all(image == int(name.removeprefix("tile_").removesuffix(".png"))), tile_id
            assert data.classes[label] == folder, tile_id


def test_every_tile_stays_with_its_id_and_label_through_the_split(tmp_path):
    root = _write_numbered_tiles(tmp_path / "tiles", {"a": 9, "b": 14, "c": 6})
    (root / "b" / "broken.png").write_bytes(b"not a png")
    for split in ((0.6, 0.2, 0.2), (10, 5, 4)):  # the second leaves tiles out
        data = load_dataset({"source": f"folder:{root}", "split": split, "skip_bad_files": True})
        _assert_tiles_match_ids_and_labels(data)
    named = tmp_path / "named"
    _write_numbered_tiles(named / "train", {"a": 12, "b": 8})
    _write_numbered_tiles(named / "test", {"a": 3, "b": 3})
    data = load_dataset({"source": f"folder:{named}", "split": ("train", 0.25, "test")})
    assert (len(data.train.ids), len(data.val.ids), len(data.test.ids)) == (15, 5, 6)
    _assert_tiles_match_ids_and_labels(data)


@pytest.mark.parametrize("stain", [None, "macenko"])
def test_loading_holds_the_tiles_in_host_memory_once(tmp_path, monkeypatch, stain):
    import tracemalloc

    import data_pipeline.parallel

    # tiles decoded ahead of the consumer grow with the threads: two, as on the CI machine
    monkeypatch.setattr(data_pipeline.parallel, "usable_cores", lambda: 2)
    root = write_tiles(tmp_path / "tiles", {"a": 300, "b": 300}, size=48)
    spec = {"source": f"folder:{root}", "split": (0.7, 0.15, 0.15), "stain_normalize": stain}
    tracemalloc.start()
    try:
        data = load_dataset(spec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    tile_bytes = sum(split.images.nbytes for split in (data.train, data.val, data.test))
    assert tile_bytes == 600 * 48 * 48 * 3
    assert peak < 1.5 * tile_bytes, f"peak {peak / tile_bytes:.2f}x the tiles"  # a list stacked, or a copy: >= 2x


def test_a_cpu_device_takes_the_training_tiles_without_a_copy(tmp_path):
    import jax

    root = write_tiles(tmp_path / "tiles", {"a": 20, "b": 20}, size=50)  # 300 kB: malloc maps them, 16-byte aligned
    train = load_dataset({"source": f"folder:{root}", "split": (0.7, 0.15, 0.15), "skip_bad_files": True}).train
    placed = jax.device_put(train.images, jax.devices("cpu")[0])
    assert placed.unsafe_buffer_pointer() == train.images.ctypes.data  # aliased, not copied
    np.testing.assert_array_equal(np.asarray(placed), train.images)


@pytest.mark.parametrize("data", [
    {"split": (0.5, 0.25, 0.25)},
    {"split": (0.5, 0.25, 0.25), "group_by": r"tile_(\d)", "stain_normalize": "macenko", "image_size": 24},
])
def test_a_folder_is_split_before_it_is_decoded_and_one_split_decodes_alone(tmp_path, data):
    root = write_tiles(tmp_path / "tiles", {"a": 20, "b": 12}, size=32)
    spec = {"source": f"folder:{root}", "classes": None, **data}
    whole = load_dataset({**spec, "skip_bad_files": True})  # none is bad: every tile decoded, then split
    listed_first = load_dataset(spec)
    for name in ("train", "val", "test"):
        part, reference = getattr(listed_first, name), getattr(whole, name)
        assert part.ids == reference.ids
        np.testing.assert_array_equal(part.images, reference.images)
    bad = next(tile_id for tile_id in whole.train.ids)
    (root / bad).write_bytes(b"not an image")  # a tile of another split is never read
    for name in ("test", "val"):
        alone = load_dataset(spec, decode=(name,))
        for other in ("train", "val", "test"):
            part, reference = getattr(alone, other), getattr(whole, other)
            assert part.ids == reference.ids
            np.testing.assert_array_equal(part.labels, reference.labels)
            if other == name:
                np.testing.assert_array_equal(part.images, reference.images)
            else:
                assert part.images is None
        assert (alone.classes, alone.image_size, alone.groups, alone.stain) == (
            whole.classes, whole.image_size, whole.groups, whole.stain)
    with pytest.raises(DataError, match=f"bad file '.*{bad}'"):
        load_dataset(spec, decode=("train",))
    with pytest.raises(DataError, match=r"gives the test split 1 tile for 2 classes"):  # before any tile is read
        load_dataset({**spec, "split": (20, 4, 1)})


def test_decoding_one_split_of_split_folders_or_with_bad_files_skipped(tmp_path):
    named = tmp_path / "named"
    write_tiles(named / "train", {"a": 12, "b": 8}, size=16)
    write_tiles(named / "test", {"b": 3, "a": 3}, size=16)
    spec = {"source": f"folder:{named}", "split": ("train", 0.25, "test")}
    whole, alone = load_dataset(spec), load_dataset(spec, decode=("val",))
    assert alone.val.ids == whole.val.ids and alone.test.ids == whole.test.ids
    np.testing.assert_array_equal(alone.val.images, whole.val.images)
    np.testing.assert_array_equal(alone.test.labels, whole.test.labels)
    assert alone.train.images is None and alone.test.images is None
    # With skipped bad files the splits depend on every tile decoding, so all are decoded.
    (named / "test" / "a" / "broken.png").write_bytes(b"not an image")
    skipping = load_dataset({**spec, "skip_bad_files": True}, decode=("test",))
    assert skipping.train.images is not None and skipping.skipped_files == ("test/a/broken.png",)


def test_package_never_imports_flaxbench():
    package = Path(data_pipeline.__file__).parent
    for source in package.rglob("*.py"):
        assert not re.search(r"^\s*(from|import)\s+flaxbench", source.read_text(), re.MULTILINE), source
