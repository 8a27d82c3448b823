"""What every source returns, and gathering and reordering decoded tiles in one array."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from data_pipeline.errors import DataError


@dataclasses.dataclass(frozen=True)
class SourceTiles:
    """All selected tiles of a source, before the train/val/test split."""

    images: np.ndarray | None  # uint8 (N, H, W, 3); None when only listed (folder_source.listed_tiles)
    labels: np.ndarray  # int32 (N,), index into classes
    ids: tuple[str, ...]
    classes: tuple[str, ...]
    skipped_files: tuple[str, ...] = ()
    resized_from: dict[str, int] = dataclasses.field(default_factory=dict)  # "HxW" -> tiles resized from that size


def collect_tiles(tiles: Iterable[tuple[str, int, np.ndarray]], most: int,
                  where: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(uint8 (N, H, W, 3) images, int32 labels, ids) of same-size RGB tiles (id, label, image), at most `most`.

    The array is allocated at `most` tiles when the first arrives and each tile written into it as
    it comes: host memory holds every tile once, where a list stacked at the end held two copies.
    The tiles received are the start of it (pages never written, for files skipped, are never
    mapped). DataError naming two tiles if their sizes differ, or if there are none.
    """
    images: np.ndarray | None = None
    ids: list[str] = []
    labels: list[int] = []
    for tile_id, label, image in tiles:
        if images is None:
            images = aligned_empty((most, *image.shape))
        elif image.shape != images.shape[1:]:
            first_height, first_width = images.shape[1:3]
            raise DataError(
                f"tiles in {where} differ in size: '{ids[0]}' is {first_width}x{first_height} "
                f"but '{tile_id}' is {image.shape[1]}x{image.shape[0]}; set spec.data.image_size "
                "to resize every tile to one square size"
            )
        images[len(ids)] = image
        ids.append(tile_id)
        labels.append(label)
    if images is None:
        raise DataError(f"{where} has no readable tiles in the selected classes")
    return images[:len(ids)], np.asarray(labels, dtype=np.int32), ids


def aligned_empty(shape: tuple[int, ...], alignment: int = 64) -> np.ndarray:
    """An uninitialised uint8 array of `shape` whose data starts at a multiple of `alignment` bytes.

    On CPU, jax.device_put aliases such an array instead of copying it (numpy's own allocations
    are 16-byte aligned, and were copied): training on CPU then holds its tiles in memory once. The
    device array and the host array are then one: nothing may write to the tiles once they are placed.
    """
    size = int(np.prod(shape))
    buffer = np.empty(size + alignment, np.uint8)
    start = -buffer.ctypes.data % alignment
    return buffer[start:start + size].reshape(shape)


def permute_rows_in_place(array: np.ndarray, order: np.ndarray) -> None:
    """Reorder `array`'s rows in place so that row i holds what row `order[i]` held (`order` a permutation).

    Follows each cycle of the permutation with one spare row, so no second copy of a large tile
    array is needed.
    """
    placed = np.zeros(len(order), dtype=bool)
    spare = np.empty_like(array[0])
    for start in range(len(order)):
        if placed[start] or order[start] == start:
            continue
        spare[...] = array[start]
        position = start
        while True:
            placed[position] = True
            source = int(order[position])
            if source == start:
                array[position] = spare
                break
            array[position] = array[source]
            position = source
