"""Macenko stain normalisation on real Kather 2016 tiles: other stainings of one tile come out alike."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from data_pipeline import DataError, load_dataset
from data_pipeline.stain import LIGHT, REFERENCE, fit_stains, normalize_tile, normalize_tiles, stain_target


@pytest.fixture
def tissue(kather_sample) -> list[np.ndarray]:
    """The tumor, stroma and mucosa sample tiles (uint8 RGB, 150 px)."""
    return [np.asarray(Image.open(path).convert("RGB"))
            for name in ("01_TUMOR", "02_STROMA", "06_MUCOSA") for path in sorted((kather_sample / name).glob("*.tif"))]


def restained(image: np.ndarray, haematoxylin: float, eosin: float, tilt: float) -> np.ndarray:
    """`image` as another lab might stain it: stain amounts scaled, the eosin colour tilted towards red."""
    stains, concentrations, _ = fit_stains(image)
    other = stains.copy()
    other[:, 1] = other[:, 1] + tilt * np.array([-0.3, 0.2, 0.1])
    other[:, 1] /= np.linalg.norm(other[:, 1])
    pixels = LIGHT * np.exp(-(other @ (concentrations * np.array([[haematoxylin], [eosin]]))))
    return np.clip(np.round(pixels.T), 0, 255).astype(np.uint8).reshape(image.shape)


def test_other_stainings_of_a_tile_normalise_alike(tissue):
    for image in tissue:
        darker, paler = restained(image, 1.4, 0.8, 0.0), restained(image, 0.75, 1.3, 0.3)
        before = np.abs(darker.astype(float) - paler.astype(float)).mean()
        after = np.abs(normalize_tile(darker, REFERENCE).astype(float) - normalize_tile(paler, REFERENCE).astype(float))
        assert before > 10 and after.mean() < before / 3, (before, after.mean())


def test_a_normalised_tile_has_the_targets_stains(tissue):
    for image in tissue:
        stains, _, peaks = fit_stains(normalize_tile(image, REFERENCE))
        cosines = (stains * REFERENCE.stain_matrix).sum(axis=0) / np.linalg.norm(REFERENCE.stain_matrix, axis=0)
        assert (cosines > 0.98).all(), cosines
        np.testing.assert_allclose(peaks, REFERENCE.max_concentrations, rtol=0.25)


def test_blank_tiles_are_kept_and_counted(kather_sample, tissue, caplog):
    blank = np.asarray(Image.open(sorted((kather_sample / "08_EMPTY").glob("*.tif"))[0]).convert("RGB"))
    assert normalize_tile(blank, REFERENCE) is None
    with caplog.at_level(logging.WARNING):
        out = normalize_tiles(np.stack([blank, tissue[0]]), REFERENCE, "the sample")
    np.testing.assert_array_equal(out[0], blank)
    assert not np.array_equal(out[1], tissue[0])
    assert "left 1 of 2 tiles of the sample as they were" in caplog.text


def test_grayscale_tiles_get_no_invented_stains_and_are_counted(tissue, caplog):
    gray = [np.repeat(image.mean(axis=2, keepdims=True).round().astype(np.uint8), 3, axis=2) for image in tissue]
    noisy = np.clip(gray[0].astype(int) + np.random.default_rng(0).integers(-2, 3, gray[0].shape), 0, 255)
    for image in [*gray, noisy.astype(np.uint8)]:  # also with a JPEG's few levels of colour noise
        assert normalize_tile(image, REFERENCE) is None
    with caplog.at_level(logging.WARNING):
        out = normalize_tiles(np.stack([gray[0], tissue[0]]), REFERENCE, "the sample")
    np.testing.assert_array_equal(out[0], gray[0])
    assert "left 1 of 2 tiles of the sample as they were" in caplog.text and "no colour (grayscale)" in caplog.text


def test_a_reference_tile_of_ones_own(kather_sample, tissue, tmp_path):
    reference = tmp_path / "reference.png"
    Image.fromarray(tissue[3]).save(reference)
    target = stain_target("macenko", str(reference), lambda path: np.asarray(Image.open(path).convert("RGB")))
    assert not np.allclose(target.stain_matrix, REFERENCE.stain_matrix, atol=0.02)
    to_itself = np.abs(normalize_tile(tissue[3], target).astype(float) - tissue[3]).mean()
    to_reference = np.abs(normalize_tile(tissue[3], REFERENCE).astype(float) - tissue[3]).mean()
    # To its own stains a tile changes only by what two stains cannot hold (Macenko's model has two).
    assert to_itself < to_reference / 3, (to_itself, to_reference)


@pytest.mark.parametrize("method, reference, message", [
    ("reinhard", None, "unknown spec.data.stain_normalize 'reinhard'; use None or 'macenko'"),
    (None, "ref.png", "stain_reference is set but spec.data.stain_normalize is None"),
    ("macenko", "blank", "has too little stained tissue to fit stains to"),
])
def test_bad_stain_settings_are_one_clear_error(kather_sample, method, reference, message):
    blank = np.full((20, 20, 3), 250, np.uint8)
    with pytest.raises(DataError, match=message):
        stain_target(method, reference, lambda path: blank)


def test_load_dataset_normalises_every_split_and_says_to_what(kather_sample):
    spec = {"source": f"folder:{kather_sample}", "classes": ("tumor", "stroma"), "split": (2, 2, 2), "image_size": 40}
    plain, normalised = load_dataset(spec), load_dataset({**spec, "stain_normalize": "macenko"})
    assert plain.stain is None and normalised.stain == REFERENCE
    for a, b in ((plain.train, normalised.train), (plain.test, normalised.test)):
        assert a.ids == b.ids
        np.testing.assert_array_equal(b.images[0], normalize_tile(a.images[0], REFERENCE))
    with pytest.raises(DataError, match="spec.data.stain_reference: cannot read image file '/no/ref.png'"):
        load_dataset({**spec, "stain_normalize": "macenko", "stain_reference": "/no/ref.png"})
