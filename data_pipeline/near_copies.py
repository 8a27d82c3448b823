"""Near-copies across the splits: a val or test tile that is an earlier split's tile rotated, flipped, re-saved as
JPEG, resized or recoloured is not held out either, though its pixels differ from the original's.

Each tile gets a perceptual hash: from its grayscale thumbnail (THUMBNAIL_SIDE px, box-filtered; a smaller tile
as it is, and none under 2 x KEPT_FREQUENCIES px), the
KEPT_FREQUENCIES x KEPT_FREQUENCIES lowest-frequency DCT-II coefficients less the constant one, one bit each
(above their median or not), HASH_BITS bits; and that for each of its 8 rotations and flips (sign changes and a
transpose of the same coefficients). A tile whose hash in some orientation differs from an earlier split's tile's
in at most NEAR_COPY_BITS bits is a near-copy of it. Tiles without structure (uniform, a plain gradient, or
mostly blank glass or fat: more than half of the thumbnail's 8 x 8 blocks flat) are not compared: a speck of
tissue in a blank tile decides its hash, and such tiles look alike (before they were left out, 4 pairs of
1,068 quarter crops of the sample tiles were within 16 bits, each a mostly blank crop with a speck in a corner).

Measured on 2026-12-07 with the 132 tiles of the NCT-CRC-HE and Kather 2016 samples (7 of them too blank to
compare), the 108 NCT ones also as 4 adjacent quarter crops each, at 150 px: the 531 tiles compared (140,715 pairs
of different tissue, neighbours included) were 40 bits apart or more, 980 quarter crops of 74-75 px blown up to 150
px 38 or more, and 1,764 sixteenth crops of 50-56 px blown up (1,554,966 pairs) over 30. Of the 531 tiles altered,
within 16 bits were: all JPEG re-saves at quality 75 and 50, flips, rotations, rotations re-saved as JPEG and noisy
copies (Gaussian, sigma 5), 99.8% of 150-100-150 px resizes and 99.3% of colour shifts (the rest too blank to
compare once altered). A crop shifted by 4 px moved by a median of 20 bits (23% within 16): shifted or overlapping
crops are mostly not found, and `spec.data.group_by` (whole slides per split) is the remedy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from data_pipeline.parallel import map_in_order

THUMBNAIL_SIDE = 48
KEPT_FREQUENCIES = 12
HASH_BITS = KEPT_FREQUENCIES * KEPT_FREQUENCIES - 1  # 143
NEAR_COPY_BITS = 16
ORIENTATIONS = 8
_WORDS = -(-HASH_BITS // 64)  # uint64 words a hash is packed in
# A coefficient this small is 0: one pixel of the thumbnail a grey level brighter moves one by up to 1.
_ZERO_BELOW = 0.5
# Grey levels: a thumbnail block this even shows no tissue (blank glass, the inside of a fat cell).
_FLAT_BLOCK_STD = 2.0
_TILES_PER_TASK = 16  # hashed at once: their thumbnails and coefficients take ~0.3 MB
# Query x reference tiles compared at once: ~0.7 MB of buffers, a few hundred microseconds of work.
_PAIRS_PER_CHUNK = 1 << 16


def _dct_basis(side: int) -> np.ndarray:
    """(KEPT_FREQUENCIES, side): the lowest-frequency DCT-II basis vectors (unscaled) of `side` pixels."""
    frequency = np.arange(KEPT_FREQUENCIES)[:, None]
    position = np.arange(side)[None, :]
    return np.cos(np.pi * (2 * position + 1) * frequency / (2 * side)).astype(np.float32)


_SIGNS = ((-1.0) ** np.arange(KEPT_FREQUENCIES)).astype(np.float32)  # a flip negates the odd frequencies


def _thumbnail(tile: np.ndarray, side: int) -> np.ndarray:
    """(side, side) uint8: the tile (uint8 (H, W, C)) in grayscale, box-filtered down."""
    image = Image.fromarray(tile[..., 0] if tile.shape[-1] == 1 else tile)
    return np.asarray(image.convert("L").resize((side, side), Image.BOX))


def _orientations(coefficients: np.ndarray) -> np.ndarray:
    """(N, 8, K, K): the DCT coefficients (N, K, K) of each tile's 8 rotations and flips."""
    rows, columns = _SIGNS[None, :, None], _SIGNS[None, None, :]
    transposed = np.swapaxes(coefficients, 1, 2)
    return np.stack([coefficients, coefficients * columns, coefficients * rows, coefficients * rows * columns,
                     transposed, transposed * columns, transposed * rows, transposed * rows * columns], axis=1)


def _hashes(tiles: np.ndarray) -> np.ndarray:
    """(N, ORIENTATIONS, words) uint64: the hashes of a few tiles (uint8 (N, H, W, C))."""
    # Tiles smaller than a thumbnail are hashed as they are: blown up, a rotation's pixels would not line up.
    side = min(THUMBNAIL_SIDE, *tiles.shape[1:3])
    if side < 2 * KEPT_FREQUENCIES:  # too few pixels for the frequencies: no structure, never a near-copy
        return np.zeros((len(tiles), ORIENTATIONS, _WORDS), np.uint64)
    basis = _dct_basis(side)
    thumbnails = np.stack([_thumbnail(tile, side) for tile in tiles]).astype(np.float32)
    plain = _mostly_blank(thumbnails)
    thumbnails -= thumbnails.mean(axis=(1, 2), keepdims=True)  # (the DC coefficient is left out anyway)
    coefficients = _orientations(basis @ thumbnails @ basis.T).reshape(len(tiles), ORIENTATIONS, -1)[..., 1:]
    # Rounding leaves ~1e-4 where a coefficient is 0 (a uniform tile): zero it, or its sign would make up a hash.
    coefficients[np.abs(coefficients) < _ZERO_BELOW] = 0.0
    bits = np.zeros((len(tiles), ORIENTATIONS, _WORDS * 64), bool)
    bits[..., :HASH_BITS] = coefficients > np.median(coefficients, axis=2, keepdims=True)
    bits[plain] = False  # no structure
    return np.packbits(bits, axis=2, bitorder="little").view(np.uint64)


def _mostly_blank(thumbnails: np.ndarray) -> np.ndarray:
    """(N,) bool: thumbnails (N, side, side) more than half of whose 8 x 8 blocks are flat (std under
    _FLAT_BLOCK_STD). A speck of tissue in a blank tile decides its hash, and all such tiles look alike."""
    block = thumbnails.shape[1] // 8
    blocks = thumbnails[:, :8 * block, :8 * block].reshape(len(thumbnails), 8, block, 8, block)
    return (blocks.std(axis=(2, 4)) < _FLAT_BLOCK_STD).mean(axis=(1, 2)) > 0.5


def perceptual_hashes(images: np.ndarray) -> np.ndarray:
    """(N, ORIENTATIONS, words) uint64: each tile's (uint8 (N, H, W, C)) hash in each of its 8 orientations, the
    first the tile as it is; _TILES_PER_TASK tiles at a time (memory stays small) on one thread per usable core."""
    hashes = np.zeros((len(images), ORIENTATIONS, _WORDS), np.uint64)
    starts = range(0, len(images), _TILES_PER_TASK)
    for start, found in zip(starts, map_in_order(lambda at: _hashes(images[at:at + _TILES_PER_TASK]), starts)):
        hashes[start:start + len(found)] = found
    return hashes


def has_structure(hashes: np.ndarray) -> np.ndarray:
    """(N,) bool: which tiles' hashes (N, 8, words) say something. A tile with structure has half its coefficients
    above their median; a uniform tile (all zero), a pure gradient (a few non-zero) or a mostly blank one (hashed
    as zero) has far fewer, and such tiles would share one hash: they are neither near-copies nor copied (two
    identical ones are exact copies)."""
    return np.bitwise_count(hashes[:, 0]).sum(axis=1) >= HASH_BITS // 3


def nearest(queries: np.ndarray, references: np.ndarray, max_bits: int = NEAR_COPY_BITS
            ) -> tuple[np.ndarray, np.ndarray]:
    """(bits, row) per query tile (hashes (Q, 8, words)): the fewest bits by which one of its orientations differs
    from a reference tile's own hash (references (R, 8, words), orientation 0), and that tile's row, where that is
    at most `max_bits` and both tiles have structure; else bits HASH_BITS + 1 and row -1. Chunks of queries on one
    thread per usable core."""
    kept = np.flatnonzero(has_structure(references))  # reference rows compared
    upright = references[kept, 0]  # (R, words)
    step = max(1, _PAIRS_PER_CHUNK // max(1, len(upright)))

    def chunk_nearest(start: int) -> tuple[np.ndarray, np.ndarray]:
        chunk = queries[start:start + step]  # (q, 8, words)
        # The first word's bits differ no more than the whole hash's: it picks the few pairs to count in full.
        differing = np.empty((len(chunk), len(upright)), np.uint64)
        counted = np.empty(differing.shape, np.uint8)
        fewest = np.full(differing.shape, 255, np.uint8)
        for orientation in range(ORIENTATIONS):
            np.bitwise_xor(chunk[:, orientation, None, 0], upright[None, :, 0], out=differing)
            np.minimum(fewest, np.bitwise_count(differing, out=counted), out=fewest)
        fewest[~has_structure(chunk)] = 255
        query, reference = np.nonzero(fewest <= max_bits)  # candidate pairs, by query
        whole = np.bitwise_count(chunk[query] ^ upright[reference][:, None, :]).sum(axis=2).min(axis=1)
        close = whole <= max_bits
        query, reference, whole = query[close], reference[close], whole[close]
        closest = np.lexsort((whole, query))  # each query's closest reference first
        first = closest[np.r_[True, query[closest][1:] != query[closest][:-1]]] if len(closest) else closest
        bits, rows = np.full(len(chunk), HASH_BITS + 1), np.full(len(chunk), -1)
        bits[query[first]], rows[query[first]] = whole[first], kept[reference[first]]
        return bits, rows

    found = list(map_in_order(chunk_nearest, range(0, len(queries), step))) if len(upright) else []
    if not found:
        return np.full(len(queries), HASH_BITS + 1), np.full(len(queries), -1)
    return np.concatenate([bits for bits, _ in found]), np.concatenate([rows for _, rows in found])


@dataclasses.dataclass(frozen=True)
class NearCopies:
    """Val and test tiles within NEAR_COPY_BITS of an earlier split's tile, exact copies left out."""

    across_splits: dict[str, int]  # "val_in_train", "test_in_train", "test_in_val" as DuplicateTiles counts them
    examples: tuple[str, ...]  # "'id' ~ 'id' (k of 143 bits differ)", closest first
    copied_ids: dict[str, tuple[str, ...]]  # "val", "test": the near-copies' ids
    label_conflicts: int = 0  # near-copies labelled otherwise than the tile they copy

    def to_json(self) -> dict[str, Any]:
        """As data.json and results.json record it (under duplicate_tiles.near_copies)."""
        return {"across_splits": dict(self.across_splits), "examples": list(self.examples),
                "copied_ids": {name: list(ids) for name, ids in self.copied_ids.items()},
                "label_conflicts": self.label_conflicts, "max_bits": NEAR_COPY_BITS, "hash_bits": HASH_BITS}


def find_near_copies(ids: Mapping[str, Sequence[str]], labels: Mapping[str, np.ndarray],
                     hashes: Mapping[str, np.ndarray], exact_copies: Mapping[str, Sequence[str]],
                     max_examples: int) -> NearCopies:
    """Val tiles near a train tile, test tiles near a train or else a val tile (train first, as for exact copies);
    the ids in `exact_copies` ({split: ids}) are counted there, not here."""
    across = {"val_in_train": 0, "test_in_train": 0, "test_in_val": 0}
    conflicts = 0
    found: list[tuple[bool, int, str]] = []  # (same label, bits, example): label conflicts, then the closest first
    copied: dict[str, list[str]] = {"val": [], "test": []}
    for later, earlier_splits in (("val", ("train",)), ("test", ("train", "val"))):
        exact = set(exact_copies.get(later, ()))
        left = np.array([tile not in exact for tile in ids[later]], bool)
        for earlier in earlier_splits:
            rows = np.flatnonzero(left)
            bits, nearest_rows = nearest(hashes[later][rows], hashes[earlier])
            for row, differing, other in zip(rows, bits, nearest_rows):
                if other >= 0:
                    across[f"{later}_in_{earlier}"] += 1
                    copied[later].append(ids[later][row])
                    same = int(labels[later][row]) == int(labels[earlier][other])
                    conflicts += not same
                    found.append((same, int(differing), f"'{ids[later][row]}' ~ '{ids[earlier][other]}' "
                                  f"({differing} of {HASH_BITS} bits differ{'' if same else ', another label'})"))
                    left[row] = False
    examples = tuple(example for *_, example in sorted(found, key=lambda entry: entry[:2])[:max_examples])
    return NearCopies(across, examples, {name: tuple(tiles) for name, tiles in copied.items()}, conflicts)
