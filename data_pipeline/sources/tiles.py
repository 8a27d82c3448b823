"""What every source returns, and stacking decoded tiles into one array."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from data_pipeline.errors import DataError


@dataclasses.dataclass(frozen=True)
class SourceTiles:
    """All selected tiles of a source, before the train/val/test split."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    labels: np.ndarray  # int32 (N,), index into classes
    ids: tuple[str, ...]
    classes: tuple[str, ...]
    skipped_files: tuple[str, ...] = ()
    resized_from: dict[str, int] = dataclasses.field(default_factory=dict)  # "HxW" -> tiles resized from that size


def stack_tiles(images: Sequence[np.ndarray], ids: Sequence[str], where: str) -> np.ndarray:
    """Stack same-size uint8 RGB tiles; DataError naming two tiles if their sizes differ."""
    if not images:
        raise DataError(f"{where} has no readable tiles in the selected classes")
    first_shape = images[0].shape
    for image, tile_id in zip(images, ids):
        if image.shape != first_shape:
            raise DataError(
                f"tiles in {where} differ in size: '{ids[0]}' is {first_shape[1]}x{first_shape[0]} "
                f"but '{tile_id}' is {image.shape[1]}x{image.shape[0]}; set spec.data.image_size "
                "to resize every tile to one square size"
            )
    return np.stack(images).astype(np.uint8, copy=False)
