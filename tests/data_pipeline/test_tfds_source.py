"""TFDS source: read through `tfds.data_source` (a dataset prepared from the real sample tiles, offline, with
no TensorFlow; mocked where nothing is read) and the not-available error."""

import socket

import numpy as np
import pytest
from PIL import Image

from data_pipeline import DataError, load_dataset, load_image
from data_pipeline.sources import tfds_source

tfds = pytest.importorskip("tensorflow_datasets")
from tests.data_pipeline import tfds_sample  # noqa: E402  (needs tensorflow_datasets)
from tests.helpers import SHARED_DATA  # noqa: E402

NAME = "colorectal_histology"
LABELS = ("tumor", "stroma", "complex", "lympho", "debris", "mucosa", "adipose", "empty")


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails loudly instead of waiting on the network."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """colorectal_histology prepared from the 24 real sample tiles, two copies of each (48 examples)."""
    tiles = SHARED_DATA / "kather2016_sample"
    if not tiles.is_dir():
        pytest.skip(f"sample tiles not found at {tiles}")
    return tiles, str(tfds_sample.prepare(tmp_path_factory.mktemp("tfds"), tiles, copies=2))


def _spec(data_dir, **overrides):
    return {"source": f"tfds:{NAME}", "tfds_data_dir": data_dir, "split": (0.5, 0.25, 0.25), **overrides}


def test_prepared_dataset_gives_labels_filenames_and_the_tiles_pixels(prepared, no_network):
    tiles, data_dir = prepared
    wanted = ("mucosa", "tumor")
    data = load_dataset(_spec(data_dir, classes=list(wanted)))
    assert data.source == f"tfds:{NAME}" and data.classes == wanted and not data.synthetic
    everything = [(tile_id, label, image) for split in (data.train, data.val, data.test)
                  for tile_id, label, image in zip(split.ids, split.labels, split.images)]
    assert len(everything) == 12 and data.image_size == (150, 150)
    for tile_id, label, image in everything:  # "train<copy>_<file name>", stored as PNG by TFDS
        (path,) = tiles.glob(f"*/{tile_id.split('_', 1)[1]}")
        assert wanted[label] == path.parent.name.split("_", 1)[1].lower()
        np.testing.assert_array_equal(image, load_image(path))


def test_all_classes_resized_and_the_split_decodes_alone(prepared, no_network):
    _, data_dir = prepared
    data = load_dataset(_spec(data_dir, classes=None, image_size=16))
    assert data.classes == LABELS and data.train.images.shape[1:] == (16, 16, 3)
    assert sum(len(split.ids) for split in (data.train, data.val, data.test)) == 48
    test_only = load_dataset(_spec(data_dir, classes=None, image_size=16), decode=("test",))
    assert test_only.train.images is None and test_only.val.images is None
    assert test_only.test.ids == data.test.ids and test_only.val.ids == data.val.ids
    np.testing.assert_array_equal(test_only.test.images, data.test.images)


def test_a_split_that_cannot_be_made_fails_before_any_image_is_decoded(prepared, no_network, monkeypatch):
    _, data_dir = prepared
    decoded = []
    decode = tfds_source._decoded_tile
    monkeypatch.setattr(tfds_source, "_decoded_tile", lambda *args, **kw: decoded.append(1) or decode(*args, **kw))
    with pytest.raises(DataError, match="asks for 100 tiles"):
        load_dataset(_spec(data_dir, classes=None, split=(80, 10, 10)))
    assert not decoded


def test_an_example_that_is_no_image_is_named(tmp_path, no_network):
    tiles = tmp_path / "tiles"
    for folder in ("01_TUMOR", "02_STROMA"):
        (tiles / folder).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.full((150, 150, 3), 40 * k, np.uint8)).save(tiles / folder / f"{folder}_{k}.tif")
    (tiles / "02_STROMA" / "02_STROMA_1.tif").write_bytes(b"not a PNG")  # stored as it is: TFDS checks no bytes
    data_dir = str(tfds_sample.prepare(tmp_path / "tfds", tiles))
    with pytest.raises(DataError, match="TFDS dataset 'colorectal_histology': example 'train0_02_STROMA_1.tif' is "
                                        "not an image .not a recognised image format, or a damaged file"):
        load_dataset(_spec(data_dir, classes=["tumor", "stroma"], split=(0.34, 0.33, 0.33)))


def test_tiles_of_one_filename_get_ids_of_their_own(tmp_path, no_network):
    tiles = tmp_path / "tiles"
    for value, folder in enumerate(("01_TUMOR", "02_STROMA")):
        (tiles / folder).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.full((150, 150, 3), 100 * value + k, np.uint8)).save(tiles / folder / f"{k}.tif")
    data_dir = str(tfds_sample.prepare(tmp_path / "tfds", tiles))
    data = load_dataset(_spec(data_dir, classes=["tumor", "stroma"], split=(0.34, 0.33, 0.33)))
    for split in (data.train, data.val, data.test):
        for tile_id, label, image in zip(split.ids, split.labels, split.images):
            assert tile_id.startswith("train/") and image[0, 0, 0] // 100 == label  # each id names its own tile
    assert len({tile_id for split in (data.train, data.val, data.test) for tile_id in split.ids}) == 6


def test_missing_class_lists_tfds_labels(no_network):
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        listed = "class 'adi' .* TFDS dataset 'colorectal_histology'; available classes: tumor, stroma"
        with pytest.raises(DataError, match=listed):
            load_dataset({"source": f"tfds:{NAME}", "classes": ["adi"]})


def test_not_prepared_without_tensorflow_says_how_to_proceed(tmp_path, monkeypatch, no_network):
    monkeypatch.setattr(tfds_source, "_tensorflow_available", lambda: False)
    with pytest.raises(DataError) as error:
        load_dataset({"source": f"tfds:{NAME}", "tfds_data_dir": str(tmp_path)})
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path) in message and "building it needs TensorFlow" in message
    assert "pip install -e '.[tfds]'" in message
    assert "Zenodo record 53169" in message
    assert "folder:/path/Kather_texture_2016_image_tiles_5000.zip" in message
    assert "specs/demo.py" in message


def test_failed_download_is_one_data_error(tmp_path, monkeypatch, no_network):
    monkeypatch.setattr(tfds_source, "_tensorflow_available", lambda: True)

    def offline(self, *args, **kwargs):
        raise ConnectionError("no route to zenodo.org")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    reason = "preparing it failed: ConnectionError: no route to zenodo.org.*Zenodo record 53169"
    with pytest.raises(DataError, match=reason):
        load_dataset({"source": f"tfds:{NAME}", "tfds_data_dir": str(tmp_path)})


def test_unknown_tfds_name_is_one_line(no_network):
    with pytest.raises(DataError, match="tfds:no_such_dataset_xyz: TFDS cannot load it") as error:
        load_dataset({"source": "tfds:no_such_dataset_xyz"})
    assert "\n" not in str(error.value)


def test_named_tfds_splits_are_read_as_they_are(kather_sample, tmp_path, no_network):
    data_dir = str(tfds_sample.prepare(tmp_path, kather_sample, splits=("train", "validation", "test"), copies=2))
    data = load_dataset(_spec(data_dir, classes=None, split=("train", "validation", "test"), image_size=8))
    held_out = load_dataset(_spec(data_dir, classes=None, split=("train", 8, "test"), image_size=8), decode=("val",))
    for split, name in ((data.train, "train"), (data.val, "validation"), (data.test, "test")):
        assert len(split.ids) == 48 and all(tile_id.startswith(f"{name}/{name}") for tile_id in split.ids)
    assert (len(held_out.train.ids), len(held_out.val.ids)) == (40, 8) and held_out.test.ids == data.test.ids
    assert not set(held_out.train.ids) & set(held_out.val.ids)
    assert held_out.train.images is None and held_out.val.images.shape == (8, 8, 8, 3)


def test_a_tfds_dataset_with_splits_of_its_own_warns_when_only_train_is_read(kather_sample, tmp_path, no_network,
                                                                             caplog):
    data_dir = str(tfds_sample.prepare(tmp_path, kather_sample, splits=("train", "valid", "test")))
    data = load_dataset(_spec(data_dir, classes=None, image_size=8))
    assert all(tile_id.startswith("train0_") for tile_id in data.train.ids + data.test.ids)
    assert "has splits of its own (train, valid, test)" in caplog.text
    assert "spec.data.split=\"('train', 'valid', 'test')\"" in caplog.text


def test_examples_that_are_no_image_are_skipped_and_listed_when_asked(tmp_path, no_network, caplog):
    tiles = tmp_path / "tiles"
    for folder in ("01_TUMOR", "02_STROMA"):
        (tiles / folder).mkdir(parents=True)
        for k in range(4):
            Image.fromarray(np.full((150, 150, 3), 40 * k, np.uint8)).save(tiles / folder / f"{folder}_{k}.tif")
    (tiles / "02_STROMA" / "02_STROMA_1.tif").write_bytes(b"not a PNG")
    data_dir = str(tfds_sample.prepare(tmp_path / "tfds", tiles, splits=("train", "test")))
    data = load_dataset(_spec(data_dir, classes=["tumor", "stroma"], split=(0.34, 0.33, 0.33), skip_bad_files=True,
                              image_size=8))
    assert data.skipped_files == ("train0_02_STROMA_1.tif",)
    ids = data.train.ids + data.val.ids + data.test.ids
    assert len(ids) == 7 and "train0_02_STROMA_1.tif" not in ids
    assert "skipped 1 bad files in tfds:colorectal_histology" in caplog.text
    named = load_dataset(_spec(data_dir, classes=["tumor", "stroma"], split=("train", 0.25, "test"),
                               skip_bad_files=True))
    assert named.skipped_files == ("train/train0_02_STROMA_1.tif", "test/test0_02_STROMA_1.tif")
    assert len(named.test.ids) == 7 and named.test.images.shape == (7, 150, 150, 3)
