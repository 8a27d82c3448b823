"""TFDS source: read through `tfds.data_source` (mocked, no TensorFlow) and the not-available error."""

import socket

import numpy as np
import pytest

from data_pipeline import DataError, load_dataset
from data_pipeline.sources import tfds_source

tfds = pytest.importorskip("tensorflow_datasets")

NAME = "colorectal_histology"
LABELS = ("tumor", "stroma", "complex", "lympho", "debris", "mucosa", "adipose", "empty")


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails loudly instead of waiting on the network."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _mock_examples(count):
    """What the mocked data source holds: (label name, filename, image) per example."""
    with tfds.testing.mock_data(num_examples=count, policy=tfds.testing.MockPolicy.USE_CODE):
        source = tfds.data_source(NAME, split="train")
        examples = [source[i] for i in range(count)]
    return [(LABELS[int(ex["label"])], str(ex["filename"]), np.asarray(ex["image"])) for ex in examples]


def test_mock_data_source_gives_labels_filenames_and_images(no_network):
    examples = _mock_examples(40)
    wanted = ("mucosa", "tumor")
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        data = load_dataset({"source": f"tfds:{NAME}", "classes": list(wanted), "split": (1.0, 0.0, 0.0)})
    expected = sorted((fn, wanted.index(label)) for label, fn, _ in examples if label in wanted)
    assert len(expected) >= 2  # the mock draws labels at random; enough of them must match
    assert data.source == f"tfds:{NAME}" and data.classes == wanted and not data.synthetic
    assert sorted(zip(data.train.ids, data.train.labels.tolist())) == expected
    assert data.train.images.shape == (len(expected), 150, 150, 3) and data.image_size == (150, 150)
    assert len(data.val.ids) == len(data.test.ids) == 0
    by_filename = {fn: image for _, fn, image in examples}
    np.testing.assert_array_equal(data.train.images[0], by_filename[data.train.ids[0]])


def test_mock_data_source_all_classes_resized(no_network):
    with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
        data = load_dataset({"source": f"tfds:{NAME}", "split": (1.0, 0.0, 0.0), "image_size": 16})
    assert data.classes == LABELS
    assert data.train.images.shape == (24, 16, 16, 3)


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


def test_named_tfds_splits_are_read_as_they_are(no_network):
    with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
        data = load_dataset({"source": f"tfds:{NAME}", "classes": None, "split": ("train", "validation", "test"),
                             "image_size": 8})
        held_out = load_dataset({"source": f"tfds:{NAME}", "classes": None, "split": ("train", 10, "test"),
                                 "image_size": 8})
    for split, name in ((data.train, "train"), (data.val, "validation"), (data.test, "test")):
        assert len(split.ids) == 30 and all(tile_id.startswith(f"{name}/") for tile_id in split.ids)
    assert (len(held_out.train.ids), len(held_out.val.ids)) == (20, 10) and held_out.test.ids == data.test.ids
    assert not set(held_out.train.ids) & set(held_out.val.ids)


def test_a_tfds_dataset_with_splits_of_its_own_warns_when_only_train_is_read(no_network, monkeypatch, caplog):
    opened = []

    def open_split_with_three_splits(name, data_dir, split):
        source, info = open_split(name, data_dir, split)
        opened.append(split)
        return source, type("Info", (), {"features": info.features, "splits": {"train": 0, "valid": 0, "test": 0}})

    open_split = tfds_source._open_split
    monkeypatch.setattr(tfds_source, "_open_split", open_split_with_three_splits)
    with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
        load_dataset({"source": f"tfds:{NAME}", "classes": None, "split": (1.0, 0.0, 0.0), "image_size": 8})
    assert opened == ["train"]
    assert "has splits of its own (train, valid, test)" in caplog.text
    assert "spec.data.split=\"('train', 'valid', 'test')\"" in caplog.text
