"""On-device batching, augmentation and normalisation: pure JAX, jit-able, static shapes.

Randomness comes only from the `key` argument, so a key always gives the same result.
Augmentation ranges:
- hflip / vflip: each example flipped with probability 1/2;
- rot90: each example rotated by k * 90 degrees, k uniform in {0, 1, 2, 3} (square images);
- brightness: each example shifted by delta * 255, delta uniform in [-0.1, 0.1];
- contrast: each example's deviation from its own mean (per channel) scaled by a factor
  uniform in [0.8, 1.2];
- hed / hed_strong: stain jitter (Tellez et al. 2019, "HED-light" and "HED-strong"): each
  example's optical densities, -ln((pixel + 1) / 256), are unmixed into haematoxylin, eosin and
  DAB by the Ruifrok & Johnston stain matrix (as skimage's rgb2hed); each stain is scaled by a
  factor uniform in [1 - s, 1 + s] and shifted by an offset uniform in [-s, s] (optical density),
  then mixed back; s = 0.05 (hed) or 0.2 (hed_strong).
Results are rounded and clipped back to uint8. Ops run in the order given.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from data_pipeline.errors import DataError

AUGMENT_OPS = ("hflip", "vflip", "rot90", "brightness", "contrast", "hed", "hed_strong")
NORMALIZE_MODES = ("imagenet", "unit", "centered")
BRIGHTNESS_DELTA = 0.1
CONTRAST_RANGE = (0.8, 1.2)
HED_STRENGTH = {"hed": 0.05, "hed_strong": 0.2}
# Ruifrok & Johnston's stain vectors (rows: haematoxylin, eosin, DAB) in optical density per RGB channel.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float32)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED).astype(np.float32)
# torchvision's ImageNet statistics (transforms.Normalize in the weights' preprocessing).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_batch_indices(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """int32 (num_examples // batch_size, batch_size): one random permutation, last partial batch dropped."""
    if batch_size < 1:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    steps = num_examples // batch_size
    if steps == 0:
        raise DataError(
            f"batch size {batch_size} is larger than the {num_examples} training examples; "
            "lower the batch size or use more training tiles"
        )
    permutation = jax.random.permutation(key, num_examples)
    return permutation[: steps * batch_size].reshape(steps, batch_size).astype(jnp.int32)


def eval_batch_indices(num_examples: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, mask), both (steps, batch_size): every example once, in order, padded with index 0."""
    if batch_size < 1:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    steps = -(-num_examples // batch_size)
    flat = np.arange(steps * batch_size, dtype=np.int32)
    mask = flat < num_examples
    flat[~mask] = 0
    return flat.reshape(steps, batch_size), mask.reshape(steps, batch_size)


GEOMETRIC_OPS = ("hflip", "vflip", "rot90")


def _orientation(key: jax.Array, op: str, n: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-example (transpose, flip rows, flip columns) flags of one geometric op, applied in that order."""
    no = jnp.zeros((n,), bool)
    if op == "hflip":
        return no, no, jax.random.bernoulli(key, 0.5, (n,))
    if op == "vflip":
        return no, jax.random.bernoulli(key, 0.5, (n,)), no
    # rot90 by k, counter-clockwise like np.rot90: k=1 T+flip rows, k=2 flip both, k=3 T+flip cols.
    turns = jax.random.randint(key, (n,), 0, 4)
    return turns % 2 == 1, (turns == 1) | (turns == 2), (turns == 2) | (turns == 3)


def _compose(first, then):
    """The (transpose, flip rows, flip cols) flags of applying `first`, then `then`."""
    t, rows, cols = first
    then_t, then_rows, then_cols = then
    # A transpose applied after flips turns a row flip into a column flip and vice versa.
    rows, cols = jnp.where(then_t, cols, rows), jnp.where(then_t, rows, cols)
    return t ^ then_t, rows ^ then_rows, cols ^ then_cols


def _orient(images: jax.Array, orientation) -> jax.Array:
    """Transpose, then flip rows, then flip columns, each example where its flag is set."""
    t, rows, cols = (flag[:, None, None, None] for flag in orientation)
    # Each step is materialised: fused together, every output pixel would read all 2^3 sources.
    if images.shape[1] == images.shape[2]:  # only rot90 transposes, and it needs square images
        images = jax.lax.optimization_barrier(jnp.where(t, jnp.swapaxes(images, 1, 2), images))
    images = jax.lax.optimization_barrier(jnp.where(rows, jnp.flip(images, axis=1), images))
    return jnp.where(cols, jnp.flip(images, axis=2), images)


def _brightness(key: jax.Array, images: jax.Array) -> jax.Array:
    """Add a per-example offset in [-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA] of full scale."""
    shape = (images.shape[0], 1, 1, 1)
    delta = jax.random.uniform(key, shape, minval=-BRIGHTNESS_DELTA, maxval=BRIGHTNESS_DELTA)
    return _to_uint8(images.astype(jnp.float32) + 255.0 * delta)


def _contrast(key: jax.Array, images: jax.Array) -> jax.Array:
    """Scale each example's deviation from its per-channel mean by a factor in CONTRAST_RANGE."""
    low, high = CONTRAST_RANGE
    factor = jax.random.uniform(key, (images.shape[0], 1, 1, 1), minval=low, maxval=high)
    pixels = images.astype(jnp.float32)
    mean = pixels.mean(axis=(1, 2), keepdims=True)
    return _to_uint8(mean + (pixels - mean) * factor)


def _stain_jitter(key: jax.Array, images: jax.Array, strength: float) -> jax.Array:
    """Scale and shift each example's haematoxylin, eosin and DAB optical densities (see module docstring)."""
    scale_key, shift_key = jax.random.split(key)
    shape = (images.shape[0], 1, 1, 3)
    scale = jax.random.uniform(scale_key, shape, minval=1.0 - strength, maxval=1.0 + strength)
    shift = jax.random.uniform(shift_key, shape, minval=-strength, maxval=strength)
    density = -jnp.log((images.astype(jnp.float32) + 1.0) / 256.0)
    stains = density @ jnp.asarray(HED_FROM_RGB) * scale + shift
    return _to_uint8(256.0 * jnp.exp(-(stains @ jnp.asarray(RGB_FROM_HED))) - 1.0)


def _to_uint8(pixels: jax.Array) -> jax.Array:
    """Round and clip float pixels to uint8."""
    return jnp.clip(jnp.round(pixels), 0, 255).astype(jnp.uint8)


def augment(key: jax.Array, images: jax.Array, ops: Sequence[str]) -> jax.Array:
    """Randomly augment each example of a uint8 NHWC batch with `ops` (see module docstring)."""
    if isinstance(ops, str):
        ops = (ops,)
    ops = tuple(ops)
    for op in ops:
        if op not in AUGMENT_OPS:
            raise DataError(f"unknown augmentation '{op}'; known: {', '.join(AUGMENT_OPS)}")
    if len(set(ops)) != len(ops):
        raise DataError(f"augmentation ops repeat: {ops}; give each at most once")
    if images.ndim != 4 or images.dtype != jnp.uint8:
        raise DataError(f"augment needs a uint8 (N, H, W, C) batch, got {images.dtype} {images.shape}")
    if "rot90" in ops and images.shape[1] != images.shape[2]:
        raise DataError(
            f"augmentation 'rot90' needs square images, got {images.shape[1]}x{images.shape[2]}; "
            "set spec.data.image_size or drop 'rot90' from spec.data.augment"
        )
    if not ops:
        return images
    # One key per op name (not per position), so adding an op to a spec leaves the others' draws
    # unchanged; with JAX's partitionable threefry (the default) key i of a split does not depend on
    # how many keys are split, so ops appended to AUGMENT_OPS leave the earlier ones' draws as well.
    op_keys = jax.random.split(key, len(AUGMENT_OPS))
    # Consecutive flips and rotations compose into one orientation, applied once: on CPU the
    # chain of per-op selects cost more than some models' whole forward pass.
    orientation = None
    for op in ops:
        op_key = op_keys[AUGMENT_OPS.index(op)]
        if op in GEOMETRIC_OPS:
            draw = _orientation(op_key, op, images.shape[0])
            orientation = draw if orientation is None else _compose(orientation, draw)
            continue
        if orientation is not None:
            images, orientation = _orient(images, orientation), None
        if op == "brightness":
            images = _brightness(op_key, images)
        elif op == "contrast":
            images = _contrast(op_key, images)
        else:
            images = _stain_jitter(op_key, images, HED_STRENGTH[op])
    return images if orientation is None else _orient(images, orientation)


def normalize(images_uint8: jax.Array, mode: str, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """uint8 images -> floats: 'imagenet' (x/255 - mean)/std, 'unit' x/255, 'centered' x/127.5 - 1."""
    pixels = jnp.asarray(images_uint8).astype(jnp.float32)
    if mode == "unit":
        out = pixels / 255.0
    elif mode == "centered":
        out = pixels / 127.5 - 1.0
    elif mode == "imagenet":
        mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
        std = jnp.asarray(IMAGENET_STD, jnp.float32)
        out = (pixels / 255.0 - mean) / std
    else:
        raise DataError(f"unknown normalize mode '{mode}'; known: {', '.join(NORMALIZE_MODES)}")
    return out.astype(dtype)
