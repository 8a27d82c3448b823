"""An offline, deterministic stand-in for the six study classes: tissue-like textures.

Each class has its own spatial structure (a filter on random noise, then a class-specific
point nonlinearity); colour is unrelated to the class:
- tumor:   large irregular blobs (low-pass noise, saturated);
- stroma:  aligned wavy fibres (oriented band-pass, random direction per tile);
- complex: loosely aligned coarse fibres with scattered small bright spots;
- lympho:  dense small dots (isotropic high band-pass, thresholded);
- debris:  broadband speckle (pink noise);
- mucosa:  maze-like glands (narrow isotropic ring band-pass, saturated).
Every tile's structure field is standardised (same mean and spread for all classes) and then
mapped between two stain colours drawn per tile from one class-independent distribution, so
mean colour carries (almost) no class information while texture does. Tiles are generated
in fixed-size chunks from `np.random.default_rng([_SEED, class index, chunk])`, so the same
settings always give the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_pipeline.classes import select_classes
from data_pipeline.errors import DataError
from data_pipeline.images import resize_square
from data_pipeline.sources.tiles import SourceTiles, aligned_empty

SYNTHETIC_CLASSES = ("tumor", "stroma", "complex", "lympho", "debris", "mucosa")
_SEED = 20160616
_CHUNK = 256  # tiles generated at once (bounds memory; fixed so the output never depends on it)
_VARIANTS = 16  # per class, tiles pick one of this many precomputed filters

# Stain colours (RGB in [0, 1]) for background (u=0) and dense tissue (u=1), before jitter.
_LIGHT = np.array([0.90, 0.72, 0.83], dtype=np.float32)
_DARK = np.array([0.42, 0.24, 0.55], dtype=np.float32)


def _frequency_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Radius (cycles/pixel) and orientation of the rfft2 frequencies of a size x size image."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    return np.hypot(fx, fy), np.arctan2(fy, fx)


def _ring(radius: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Isotropic band-pass around `centre` cycles/pixel."""
    return np.exp(-0.5 * ((radius - centre) / width) ** 2)


def _oriented(angle: np.ndarray, direction: float, spread: float) -> np.ndarray:
    """Angular window around `direction` (radians, modulo pi)."""
    delta = (angle - direction + np.pi / 2) % np.pi - np.pi / 2
    return np.exp(-0.5 * (delta / spread) ** 2)


def _fibres(
    radius: np.ndarray, angle: np.ndarray, frequencies: np.ndarray, spread: float
) -> list[np.ndarray]:
    """Oriented band-pass filters: variant i has frequency frequencies[i] and direction pi * i / n."""
    directions = np.pi * np.arange(len(frequencies)) / len(frequencies)
    return [_ring(radius, f, 0.02) * _oriented(angle, d, spread) for f, d in zip(frequencies, directions)]


def _filter_bank(name: str, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per class, the spectral filters of its structure components, `_VARIANTS` each."""
    radius, angle = _frequency_grid(size)
    variants = np.arange(_VARIANTS) / _VARIANTS
    if name == "tumor":
        banks = [[np.exp(-0.5 * (radius / (0.012 + 0.008 * v)) ** 2) for v in variants]]
    elif name == "stroma":
        banks = [_fibres(radius, angle, rng.uniform(0.05, 0.08, size=_VARIANTS), spread=0.12)]
    elif name == "complex":
        fibres = _fibres(radius, angle, rng.uniform(0.03, 0.06, size=_VARIANTS), spread=0.35)
        spots = [_ring(radius, 0.17 + 0.03 * v, 0.03) for v in variants]
        banks = [fibres, spots]
    elif name == "lympho":
        banks = [[_ring(radius, 0.10 + 0.03 * v, 0.03) for v in variants]]
    elif name == "debris":
        rolloff = np.exp(-0.5 * (radius / 0.35) ** 2)
        banks = [[(radius + 0.02) ** -(0.4 + 0.4 * v) * rolloff for v in variants]]
    elif name == "mucosa":
        banks = [[_ring(radius, 0.03 + 0.015 * v, 0.006) for v in variants]]
    else:  # pragma: no cover - names come from SYNTHETIC_CLASSES
        raise ValueError(name)
    return [_unit_variance(np.stack(bank), size) for bank in banks]


def _unit_variance(bank: np.ndarray, size: int) -> np.ndarray:
    """Scale filters so that filtered `_structure` noise has zero mean and unit variance.

    With uniform noise in [-0.5, 0.5) for the real and imaginary parts, irfft2 output
    variance is sum(w * H**2) / 6 / size**4, where w counts the mirrored rfft columns twice.
    """
    bank = bank.astype(np.float64)
    bank[:, 0, 0] = 0.0  # no DC: every tile's structure has mean zero
    mirrored = np.full(bank.shape[-1], 2.0)
    mirrored[0] = 1.0
    if size % 2 == 0:
        mirrored[-1] = 1.0
    power = (bank**2 * mirrored).sum(axis=(1, 2)) / 6.0
    return (bank * (size**2 / np.sqrt(power))[:, None, None]).astype(np.float32)


def _standardise(field: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation per tile."""
    field -= field.mean(axis=(1, 2), keepdims=True)
    field /= np.sqrt(np.square(field).mean(axis=(1, 2), keepdims=True)) + 1e-6
    return field


def _structure(
    name: str, banks: list[np.ndarray], count: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Standardised structure fields (count, size, size) of class `name`."""
    width = size // 2 + 1
    # Uniform noise in [-0.5, 0.5) viewed as complex: a white spectrum with random phases.
    spectrum = (rng.random((count, size, 2 * width), dtype=np.float32) - 0.5).view(np.complex64)
    fields = []
    for bank in banks:
        choice = rng.integers(0, len(bank), size=count)
        fields.append(np.fft.irfft2(spectrum * bank[choice], s=(size, size)).astype(np.float32, copy=False))
    if name in ("tumor", "mucosa"):
        structure = np.tanh(2.5 * fields[0])
    elif name == "lympho":
        structure = np.maximum(fields[0] - 0.8, 0.0)
    elif name == "complex":
        structure = fields[0] + 2.0 * np.maximum(fields[1] - 2.0, 0.0)
    else:
        structure = fields[0]
    return _standardise(structure.astype(np.float32, copy=False))


def _colourise(structure: np.ndarray, rng: np.random.Generator, out: np.ndarray) -> None:
    """Write uint8 RGB into `out`: structure mapped between per-tile jittered stain colours."""
    count = structure.shape[0]
    shift = rng.normal(0.0, 0.06, size=(count, 3))
    light = _LIGHT + shift + rng.normal(0.0, 0.03, size=(count, 3))
    dark = _DARK + shift + rng.normal(0.0, 0.03, size=(count, 3))
    contrast = rng.uniform(0.7, 1.3, size=(count, 1))
    # density = clip(0.5 + 0.17 * structure, 0, 1); colour = light + (dark - light) * density
    density = structure
    density *= 0.17
    density += 0.5
    np.clip(density, 0.0, 1.0, out=density)
    low = (light * 255.0 + 0.5).astype(np.float32)[:, :, None, None]
    span = ((dark - light) * contrast * 255.0).astype(np.float32)[:, :, None, None]
    planes = np.empty((3,) + structure.shape, dtype=np.uint8)
    values = np.empty_like(density)
    for channel in range(3):  # channel-first planes: contiguous writes, one transpose at the end
        np.multiply(density, span[:, channel], out=values)
        values += low[:, channel]
        np.clip(values, 0.0, 255.0, out=values)
        planes[channel] = values
    out[...] = np.moveaxis(planes, 0, -1)


def synthetic_class_tiles(name: str, count: int, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """`count` uint8 RGB tiles (count, size, size, 3) of synthetic class `name` (into `out` if given)."""
    index = SYNTHETIC_CLASSES.index(name)
    banks = _filter_bank(name, size, np.random.default_rng([_SEED, index]))
    if out is None:
        out = np.empty((count, size, size, 3), dtype=np.uint8)
    for chunk, start in enumerate(range(0, count, _CHUNK)):
        rng = np.random.default_rng([_SEED, index, chunk + 1])
        stop = min(start + _CHUNK, count)
        _colourise(_structure(name, banks, stop - start, size, rng), rng, out[start:stop])
    return out


def load_synthetic(
    requested_classes: Sequence[str] | None,
    per_class: int,
    size: int,
    image_size: int | None,
) -> SourceTiles:
    """The synthetic tiles of the selected classes, `per_class` each, `size` pixels square."""
    for key, value in (("synthetic_per_class", per_class), ("synthetic_size", size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise DataError(f"spec.data.{key} must be a positive integer, got {value!r}")
    if size < 8:
        raise DataError(f"spec.data.synthetic_size must be at least 8 pixels, got {size}")
    classes = select_classes(SYNTHETIC_CLASSES, requested_classes, "the synthetic source")
    final_size = image_size or size
    images = aligned_empty((len(classes) * per_class, final_size, final_size, 3))
    for label, name in enumerate(classes):
        block = images[label * per_class : (label + 1) * per_class]
        if final_size == size:
            synthetic_class_tiles(name, per_class, size, out=block)
        else:
            for k, tile in enumerate(synthetic_class_tiles(name, per_class, size)):
                block[k] = resize_square(tile, final_size)
    return SourceTiles(
        images=images,
        labels=np.repeat(np.arange(len(classes), dtype=np.int32), per_class),
        ids=tuple(f"synthetic/{name}/{k}" for name in classes for k in range(per_class)),
        classes=classes,
    )
