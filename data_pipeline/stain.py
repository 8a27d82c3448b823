"""Macenko stain normalisation: tiles from other labs and scanners mapped to one H&E appearance.

Macenko et al. 2009 ("A method for normalizing histology slides for quantitative analysis"), per
tile: optical densities OD = -ln((pixel + 1) / 240); pixels with OD below 0.15 in a channel are
background; the two stain vectors are the extreme angles (1st and 99th percentile) of the tissue
pixels' OD in the plane of its two main eigenvectors, haematoxylin the one with the larger red
density; stain concentrations by least squares, scaled so their 99th percentiles match the
target's, then rendered with the target's stain vectors. The default target is the reference the
method is usually run with (as in StainTools and torchstain); `spec.data.stain_reference` fits
the target to a tile of your own instead. A tile with too little stained tissue to fit (under 1%
of its pixels, e.g. blank background) is left as it is, and the count is logged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from data_pipeline.errors import DataError
from data_pipeline.parallel import map_in_order

logger = logging.getLogger(__name__)

METHODS = ("macenko",)
LIGHT = 240.0  # the transmitted light intensity the densities are relative to
BACKGROUND_DENSITY = 0.15  # below this in any channel a pixel is background
ANGLE_PERCENTILE = 1.0  # the stain vectors are the 1st and 99th percentile angles
CONCENTRATION_PERCENTILE = 99.0
MIN_TISSUE_SHARE = 0.01
# A tile whose tissue's densities barely differ between channels has no colour, so no stains to separate (a
# grayscale tile): the median distance of its pixels' densities from the gray axis is below this. The 132
# sample tiles' medians were 0.13 (fat) to 0.95, a grayscale JPEG's 0.
MIN_STAIN_CHROMA = 0.04
# The usual Macenko target: haematoxylin and eosin OD vectors (columns) and their 99th percentile concentrations.
REFERENCE_STAIN_MATRIX = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
REFERENCE_MAX_CONCENTRATIONS = np.array([1.9705, 1.0308])


@dataclasses.dataclass(frozen=True)
class StainTarget:
    """The appearance tiles are normalised to: stain vectors (3, 2) and 99th percentile concentrations (2,)."""

    stain_matrix: np.ndarray
    max_concentrations: np.ndarray

    def to_json(self) -> dict[str, Any]:
        """The target as data.json records it (predict renders new tiles with it)."""
        return {"method": "macenko", "stain_matrix": np.round(self.stain_matrix, 6).tolist(),
                "max_concentrations": np.round(self.max_concentrations, 6).tolist()}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> StainTarget:
        """The target data.json recorded."""
        return cls(np.asarray(record["stain_matrix"], np.float64), np.asarray(record["max_concentrations"], np.float64))


REFERENCE = StainTarget(REFERENCE_STAIN_MATRIX, REFERENCE_MAX_CONCENTRATIONS)


def _densities(image: np.ndarray) -> np.ndarray:
    """(pixels, 3) optical densities of a uint8 RGB image."""
    return -np.log((image.reshape(-1, 3).astype(np.float64) + 1.0) / LIGHT)


def _positive_unit(vector: np.ndarray) -> np.ndarray:
    """`vector` scaled to unit length, pointing into positive densities."""
    vector = vector if vector.sum() >= 0 else -vector
    return vector / np.linalg.norm(vector)


def fit_stains(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(stain matrix (3, 2), concentrations (2, pixels), their 99th percentiles (2,)) of a tile, or None
    when it has too little stained tissue to fit, or no colour (grayscale)."""
    density = _densities(image)
    tissue = density[(density >= BACKGROUND_DENSITY).all(axis=1)]
    if len(tissue) < max(3, MIN_TISSUE_SHARE * len(density)):
        return None
    sampled = tissue[::4]
    if np.median(np.linalg.norm(sampled - sampled.mean(axis=1, keepdims=True), axis=1)) < MIN_STAIN_CHROMA:
        return None
    _, vectors = np.linalg.eigh(np.cov(tissue.T))
    plane = np.stack([_positive_unit(vectors[:, 2]), _positive_unit(vectors[:, 1])], axis=1)
    projected = tissue @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [ANGLE_PERCENTILE, 100 - ANGLE_PERCENTILE])
    first, second = (_positive_unit(plane @ np.array([np.cos(a), np.sin(a)])) for a in (low, high))
    stains = np.stack([first, second] if first[0] > second[0] else [second, first], axis=1)
    concentrations = np.linalg.pinv(stains) @ density.T  # least squares; lstsq over every pixel is 10x slower
    peaks = np.percentile(concentrations, CONCENTRATION_PERCENTILE, axis=1)
    if not np.all(np.isfinite(peaks)) or np.any(peaks <= 0):
        return None
    return stains, concentrations, peaks


def normalize_tile(image: np.ndarray, target: StainTarget) -> np.ndarray | None:
    """`image` (H, W, 3 uint8) rendered with `target`'s stains, or None when it cannot be fitted."""
    fitted = fit_stains(image)
    if fitted is None:
        return None
    _, concentrations, peaks = fitted
    scaled = concentrations * (target.max_concentrations / peaks)[:, None]
    pixels = LIGHT * np.exp(-(target.stain_matrix @ scaled))
    return np.clip(np.round(pixels.T), 0, 255).astype(np.uint8).reshape(image.shape)


def normalize_tiles_counted(images: np.ndarray, target: StainTarget,
                            out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(`images` normalised to `target`, how many tiles were kept as they were: too little stained tissue, or none
    in colour).

    The result is written to `out` (`images` itself normalises in place), else to a new array. Tiles
    are spread over one thread per usable core (numpy's array work runs outside the GIL); the result
    does not depend on how many there are.
    """
    out = np.empty_like(images) if out is None else out

    def normalize_into_out(i: int) -> bool:
        result = normalize_tile(images[i], target)
        out[i] = images[i] if result is None else result
        return result is None

    return out, sum(map_in_order(normalize_into_out, range(len(images))))


def normalize_tiles(images: np.ndarray, target: StainTarget, where: str, out: np.ndarray | None = None) -> np.ndarray:
    """Every tile of `images` (N, H, W, 3) normalised to `target` (into `out` if given); tiles that cannot be are kept.

    A warning counts the tiles kept as they were.
    """
    out, kept = normalize_tiles_counted(images, target, out)
    warn_kept(kept, len(images), where)
    return out


def warn_kept(kept: int, total: int, where: str) -> None:
    """Warn that stain normalisation left `kept` of `total` tiles of `where` as they were (none: no warning)."""
    if kept:
        logger.warning("stain normalisation left %d of %d tiles of %s as they were: under %.0f%% of their pixels "
                       "are stained tissue, or they have no colour (grayscale)", kept, total, where,
                       100 * MIN_TISSUE_SHARE)


def stain_target(method: Any, reference: Any, load_reference: Callable[[str], np.ndarray]) -> StainTarget | None:
    """The target of spec.data.stain_normalize / stain_reference (None: no normalisation); DataError if invalid.

    `load_reference(path)` decodes the reference tile.
    """
    if method is None:
        if reference is not None:
            raise DataError("spec.data.stain_reference is set but spec.data.stain_normalize is None; set "
                            "spec.data.stain_normalize='macenko' to normalise to it")
        return None
    if method not in METHODS:
        raise DataError(f"unknown spec.data.stain_normalize {method!r}; use None or {', '.join(map(repr, METHODS))}")
    if reference is None:
        return REFERENCE
    try:
        image = load_reference(reference)
    except DataError as e:
        raise DataError(f"spec.data.stain_reference: {e}") from None
    fitted = fit_stains(image)
    if fitted is None:
        raise DataError(f"spec.data.stain_reference '{reference}' has too little stained tissue to fit stains "
                        "to; choose a tile with nuclei and stroma")
    stains, _, peaks = fitted
    return StainTarget(stains, peaks)
