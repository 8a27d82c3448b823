"""On-device batching, augmentation and normalisation: coverage, invariants, jit and scan."""

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipeline import DataError, augment, device, eval_batch_indices, normalize, train_batch_indices
from data_pipeline.device import RGB_FROM_HED

KEY = jax.random.key(0)
# Tests call the jitted form (as the training loop does); eager dispatch compiles op by op and is slow.
AUGMENT = jax.jit(augment, static_argnums=2)
TRAIN_BATCHES = jax.jit(train_batch_indices, static_argnums=(1, 2))
GEOMETRIC = ("hflip", "vflip", "rot90")
IMAGES = jnp.asarray(np.random.default_rng(0).integers(0, 256, (32, 6, 6, 3), dtype=np.uint8))


def _dihedral(image):
    """The 8 flips/rotations of one HWC image."""
    rotations = [np.rot90(image, k, axes=(0, 1)) for k in range(4)]
    return rotations + [r[:, ::-1] for r in rotations]


def _matching(candidates, image):
    """Indices of the candidate images equal to `image`."""
    return [i for i, c in enumerate(candidates) if np.array_equal(c, image)]


def test_eval_indices_cover_every_example_once_in_order():
    indices, mask = eval_batch_indices(10, 4)
    assert indices.shape == mask.shape == (3, 4) and indices.dtype == np.int32 and mask.dtype == np.bool_
    np.testing.assert_array_equal(indices[mask], np.arange(10))
    np.testing.assert_array_equal(indices[~mask], [0, 0])
    exact, exact_mask = eval_batch_indices(8, 4)
    assert exact.shape == (2, 4) and exact_mask.all()


def test_train_indices_are_a_permutation_prefix():
    batches = TRAIN_BATCHES(KEY, 10, 4)
    assert batches.shape == (2, 4) and batches.dtype == jnp.int32
    values = np.asarray(batches).ravel()
    assert len(set(values.tolist())) == 8 and values.min() >= 0 and values.max() < 10
    full = np.sort(np.asarray(TRAIN_BATCHES(KEY, 12, 4)).ravel())
    np.testing.assert_array_equal(full, np.arange(12))
    np.testing.assert_array_equal(batches, TRAIN_BATCHES(KEY, 10, 4))
    assert not np.array_equal(batches, TRAIN_BATCHES(jax.random.key(1), 10, 4))
    with pytest.raises(DataError, match="batch size 16 is larger than the 10 training examples"):
        train_batch_indices(KEY, 10, 16)


@pytest.mark.parametrize(
    "ops, allowed",
    [(("hflip",), {0, 4}), (("vflip",), {0, 6}), (("rot90",), {0, 1, 2, 3}), (GEOMETRIC, set(range(8)))],
)
def test_geometric_ops_only_flip_or_rotate(ops, allowed):
    out = np.asarray(AUGMENT(KEY, IMAGES, ops))
    assert out.dtype == np.uint8 and out.shape == IMAGES.shape
    used = set()
    for image, result in zip(np.asarray(IMAGES), out):
        matches = _matching(_dihedral(image), result)
        assert len(matches) == 1 and matches[0] in allowed  # random 6x6 images: all 8 transforms differ
        used.add(matches[0])
    assert len(used) >= 2  # the choice is random per example, not one transform for the batch
    if ops == ("rot90",):
        assert used == {0, 1, 2, 3}


@pytest.mark.parametrize("ops", [("hflip", "rot90"), ("rot90", "hflip"), ("vflip", "rot90", "hflip"),
                                 ("rot90", "vflip", "brightness", "hflip", "contrast")])
def test_ops_run_in_the_order_given(ops):
    # Each op draws from its own key, so a chain equals the ops applied one call at a time.
    one_by_one = IMAGES
    for op in ops:
        one_by_one = AUGMENT(KEY, one_by_one, (op,))
    np.testing.assert_array_equal(AUGMENT(KEY, IMAGES, ops), one_by_one)


def test_augment_is_deterministic_per_key_and_jits():
    ops = ("hflip", "vflip", "rot90", "brightness", "contrast")
    first = AUGMENT(KEY, IMAGES, ops)
    np.testing.assert_array_equal(first, AUGMENT(KEY, IMAGES, ops))
    assert not np.array_equal(first, AUGMENT(jax.random.key(1), IMAGES, ops))
    np.testing.assert_array_equal(augment(KEY, IMAGES, ()), IMAGES)


def test_augment_inside_scan():
    def step(total, key):
        batch = augment(key, IMAGES, GEOMETRIC)
        return total + batch.astype(jnp.int32).sum(), batch[0]

    keys = jax.random.split(KEY, 3)
    total, firsts = jax.jit(lambda k: jax.lax.scan(step, jnp.int32(0), k))(keys)
    assert firsts.shape == (3, 6, 6, 3) and firsts.dtype == jnp.uint8
    np.testing.assert_array_equal(firsts[1], AUGMENT(keys[1], IMAGES, GEOMETRIC)[0])


def test_photometric_ops_stay_in_their_ranges():
    flat = jnp.full((16, 4, 4, 3), 128, jnp.uint8)
    bright = np.asarray(AUGMENT(KEY, flat, ("brightness",))).astype(int)
    assert (np.abs(bright - 128) <= 26).all() and len(np.unique(bright[:, 0, 0, 0])) > 1
    assert (bright == bright[:, :1, :1, :1]).all()  # one offset per example
    contrasted = np.asarray(AUGMENT(KEY, IMAGES, ("contrast",))).astype(float)
    original = np.asarray(IMAGES).astype(float)
    spread_ratio = contrasted.std(axis=(1, 2, 3)) / original.std(axis=(1, 2, 3))
    assert (spread_ratio > 0.75).all() and (spread_ratio < 1.25).all() and spread_ratio.std() > 0.01


def test_the_first_ops_draw_as_before_later_ops_were_added():
    # sha256 of this output with the code before 'hed' and 'hed_strong' joined AUGMENT_OPS: runs that use
    # only the first five ops keep their augmentations (and a resumed run its draws).
    out = np.asarray(AUGMENT(KEY, IMAGES, ("hflip", "vflip", "rot90", "brightness", "contrast")))
    assert hashlib.sha256(out.tobytes()).hexdigest() == "7bc836147a8b53f5850281a3990dcc44d327133b8e7e35651f3c11a6cca6b9fc"


def _stains(images):
    """Optical densities of uint8 images unmixed into haematoxylin, eosin and DAB (the module's definition)."""
    return -np.log((np.asarray(images, np.float64) + 1) / 256) @ np.linalg.inv(np.asarray(RGB_FROM_HED, np.float64))


@pytest.mark.parametrize("op, strength", [("hed", 0.05), ("hed_strong", 0.2)])
def test_stain_jitter_scales_and_shifts_each_stain_within_its_range(kather_sample, op, strength):
    from PIL import Image

    tiles = np.stack([np.asarray(Image.open(path).convert("RGB"))[:48, :48]
                      for path in sorted(kather_sample.glob("0[1-6]_*/*.tif"))[:8]])
    out = np.asarray(AUGMENT(KEY, jnp.asarray(tiles), (op,)))
    assert out.shape == tiles.shape and out.dtype == np.uint8
    before, after = _stains(tiles), _stains(out)
    fits = []
    for k in range(len(tiles)):
        inside = ((out[k] > 2) & (out[k] < 253)).all(axis=-1)  # not clipped
        for c in range(3):
            scale, shift = np.polyfit(before[k][inside][:, c], after[k][inside][:, c], 1)
            assert 1 - strength - 0.02 < scale < 1 + strength + 0.02, (k, c, scale)
            assert -strength - 0.02 < shift < strength + 0.02, (k, c, shift)
            fits.append((scale, shift))
    assert np.std([scale for scale, _ in fits]) > strength / 10  # drawn per example and stain, not once
    assert not np.array_equal(out, np.asarray(AUGMENT(jax.random.key(1), jnp.asarray(tiles), (op,))))


def test_stain_jitter_of_zero_strength_gives_the_tiles_back(monkeypatch):
    monkeypatch.setitem(device.HED_STRENGTH, "hed", 0.0)
    np.testing.assert_array_equal(augment(KEY, IMAGES, ("hed",)), IMAGES)


def test_bad_augment_requests():
    with pytest.raises(DataError, match="unknown augmentation 'shear'"):
        augment(KEY, IMAGES, ("shear",))
    with pytest.raises(DataError, match="rot90' needs square images, got 6x4"):
        augment(KEY, IMAGES[:, :, :4], ("rot90",))
    with pytest.raises(DataError, match="uint8"):
        augment(KEY, IMAGES.astype(jnp.float32), ("hflip",))
    assert AUGMENT(KEY, IMAGES[:, :, :4], ("hflip", "vflip")).shape == (32, 6, 4, 3)


def test_normalize_modes():
    pixels = jnp.asarray([[[[0, 255, 51]]]], jnp.uint8)
    np.testing.assert_allclose(normalize(pixels, "unit"), [[[[0.0, 1.0, 0.2]]]], rtol=1e-6)
    np.testing.assert_allclose(normalize(pixels, "centered"), [[[[-1.0, 1.0, 51 / 127.5 - 1]]]], rtol=1e-6)
    expected = (np.array([0.0, 1.0, 0.2]) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(normalize(pixels, "imagenet")[0, 0, 0], expected, rtol=1e-5)
    assert normalize(pixels, "unit", jnp.bfloat16).dtype == jnp.bfloat16
    assert jax.jit(normalize, static_argnums=(1, 2))(pixels, "imagenet", jnp.float32).shape == (1, 1, 1, 3)
    with pytest.raises(DataError, match="unknown normalize mode 'zscore'"):
        normalize(pixels, "zscore")
