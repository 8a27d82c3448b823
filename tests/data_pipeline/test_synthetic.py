"""Synthetic source: deterministic, shaped like the study, and separable by texture but not colour."""

import numpy as np
import pytest

from data_pipeline import DataError, load_dataset
from data_pipeline.sources.synthetic import SYNTHETIC_CLASSES, synthetic_class_tiles


def _nearest_centroid_accuracy(train_x, train_y, test_x, test_y):
    """Accuracy of a nearest-centroid classifier on standardised features."""
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-9
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    centroids = np.stack([train_x[train_y == k].mean(axis=0) for k in np.unique(train_y)])
    predicted = np.argmin(((test_x[:, None, :] - centroids[None]) ** 2).sum(axis=-1), axis=1)
    return float((predicted == test_y).mean())


def _mean_colour(images):
    """Mean RGB per tile."""
    return images.reshape(len(images), -1, 3).mean(axis=1)


def _band_energies(images):
    """Log share of the gray-level spectrum's energy in five radial frequency bands."""
    gray = images.astype(np.float32).mean(axis=-1)
    gray -= gray.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.rfft2(gray)) ** 2
    size = gray.shape[1]
    radius = np.hypot(np.fft.rfftfreq(size)[None, :], np.fft.fftfreq(size)[:, None])
    edges = [0.005, 0.03, 0.06, 0.12, 0.25, 0.8]
    masks = [(radius >= low) & (radius < high) for low, high in zip(edges, edges[1:])]
    bands = np.stack([power[:, mask].sum(axis=1) for mask in masks], axis=1)
    return np.log(bands / bands.sum(axis=1, keepdims=True))


def test_mean_colour_is_near_chance_while_texture_is_learnable():
    config = {"source": "synthetic", "synthetic_per_class": 60, "synthetic_size": 64}
    data = load_dataset({**config, "split": (0.5, 0.0, 0.5)})
    train, test = data.train, data.test

    def accuracy(features):
        train_x, test_x = features(train.images), features(test.images)
        return _nearest_centroid_accuracy(train_x, train.labels, test_x, test.labels)

    colour, texture = accuracy(_mean_colour), accuracy(_band_energies)
    assert colour < 0.35, f"mean colour separates the classes too well: {colour:.2f} (chance 0.17)"
    assert texture > 0.8, f"texture features should separate the classes: {texture:.2f}"


def test_same_settings_same_pixels():
    first = synthetic_class_tiles("stroma", 5, 32)
    np.testing.assert_array_equal(first, synthetic_class_tiles("stroma", 5, 32))
    assert first.shape == (5, 32, 32, 3) and first.dtype == np.uint8
    assert len({tile.tobytes() for tile in first}) == 5  # tiles differ from each other
    assert not np.array_equal(synthetic_class_tiles("mucosa", 5, 32), first)


def test_load_dataset_synthetic_defaults_and_ids():
    config = {"source": "synthetic", "synthetic_per_class": 4, "synthetic_size": 24, "split": (12, 6, 6)}
    data = load_dataset(config)
    assert data.synthetic and data.source == "synthetic"
    assert data.classes == SYNTHETIC_CLASSES == ("tumor", "stroma", "complex", "lympho", "debris", "mucosa")
    assert data.image_size == (24, 24)
    assert data.train.ids == tuple(sorted(data.train.ids))
    expected_ids = {f"synthetic/{c}/{k}" for c in SYNTHETIC_CLASSES for k in range(4)}
    assert set(data.train.ids + data.val.ids + data.test.ids) == expected_ids
    for part in (data.train, data.val, data.test):
        assert all(part.ids[i].split("/")[1] == data.classes[label] for i, label in enumerate(part.labels))


def test_resize_and_class_selection():
    config = {"source": "synthetic", "classes": ["lympho", "tumor"], "synthetic_per_class": 4}
    data = load_dataset({**config, "synthetic_size": 32, "image_size": 16, "split": (4, 2, 2)})
    assert data.classes == ("lympho", "tumor") and data.train.images.shape == (4, 16, 16, 3)
    with pytest.raises(DataError, match="class 'adipose' .* synthetic source; available classes: tumor, str"):
        load_dataset({"source": "synthetic", "classes": ["adipose"]})
    with pytest.raises(DataError, match="synthetic_per_class must be a positive integer"):
        load_dataset({"source": "synthetic", "synthetic_per_class": 0})
