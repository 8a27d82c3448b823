"""Copied tiles in the splits: a test tile that copies a training tile is not held out.

Tiles are compared by a SHA-256 digest of their pixels as the model sees them (decoded, resized,
stain-normalised), so a file saved twice under two names, or as PNG and as TIFF, is found; and by a
perceptual hash (data_pipeline.near_copies), so a val or test tile that is a train tile rotated, flipped,
re-compressed, resized or recoloured is found as a near-copy. A shifted crop is not. `spec.data.duplicates`
says what is done about copies:
- "warn" (default): a warning names how many and an example; data.json and results.json record them;
- "error": a copy across splits, or identical tiles under two labels, is refused (DataError);
- "off": tiles are not compared (saves hashing them: on a 2-core CPU 0.26 s a GB of tiles, and 0.1 ms a
  tile for the perceptual hashes, plus their comparison).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from data_pipeline.errors import DataError
from data_pipeline.near_copies import NearCopies, find_near_copies
from data_pipeline.parallel import map_in_order

logger = logging.getLogger(__name__)

DUPLICATE_MODES = ("warn", "error", "off")
# (later split, earlier split): a tile of the first with a pixel-identical tile in the second.
CROSS_SPLIT_PAIRS = (("val", "train"), ("test", "train"), ("test", "val"))
MAX_EXAMPLES = 5


def check_duplicates_mode(mode: Any) -> str:
    """spec.data.duplicates if it is one of DUPLICATE_MODES; DataError naming the key otherwise."""
    if mode not in DUPLICATE_MODES:
        raise DataError(f"spec.data.duplicates is {mode!r}; use one of {', '.join(map(repr, DUPLICATE_MODES))}")
    return mode


DIGEST_BYTES = 16  # of SHA-256's 32: two different tiles share 16 bytes with a chance of 2**-128


def tile_digests(images: np.ndarray) -> list[bytes]:
    """The SHA-256 digest (its first DIGEST_BYTES) of each tile's pixels (uint8 (N, H, W, C)), in row order, on one
    thread per usable core (hashlib leaves the GIL while it hashes)."""
    return list(map_in_order(_digest, images))


def _digest(tile: np.ndarray) -> bytes:
    """The first DIGEST_BYTES of the SHA-256 of one tile's pixels."""
    return hashlib.sha256(np.ascontiguousarray(tile).data).digest()[:DIGEST_BYTES]


@dataclasses.dataclass(frozen=True)
class DuplicateTiles:
    """Pixel-identical tiles found in a dataset's splits."""

    # "val_in_train", "test_in_train", "test_in_val": tiles of the first split whose pixels first occur in the
    # second (a test tile copied in train and in val counts once, in train)
    across_splits: dict[str, int]
    within_splits: dict[str, int]  # per split: tiles whose pixels first occur earlier in the same split
    label_conflicts: int  # sets of identical tiles that carry more than one label
    examples: tuple[str, ...]  # "'id' = 'id'" of the first copies found, for a reader to look at
    # "val", "test": the ids of the split's tiles counted in across_splits, e.g. to score the split without them
    copied_ids: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    near_copies: NearCopies | None = None  # None where the tiles' perceptual hashes were not compared

    @property
    def held_out_copies(self) -> int:
        """Val and test tiles with a copy in a split before them (train, or val for test)."""
        return sum(self.across_splits.values())

    def to_json(self) -> dict[str, Any]:
        """As data.json and results.json record it."""
        return {"across_splits": dict(self.across_splits), "within_splits": dict(self.within_splits),
                "label_conflicts": self.label_conflicts, "examples": list(self.examples),
                "copied_ids": {name: list(ids) for name, ids in self.copied_ids.items()},
                "near_copies": None if self.near_copies is None else self.near_copies.to_json()}

    def problem(self) -> str | None:
        """A sentence on the copies across splits and label conflicts; None when there are none."""
        parts = []
        for (later, earlier), count in zip(CROSS_SPLIT_PAIRS, self.across_splits.values()):
            if count:
                are = "tiles are" if count > 1 else "tile is"
                parts.append(f"{count} {later} {are} pixel-identical to {earlier} tiles")
        near = self.near_copies.across_splits if self.near_copies is not None else {}
        for (later, earlier), count in zip(CROSS_SPLIT_PAIRS, near.values()):
            if count:
                are = "tiles are near-copies" if count > 1 else "tile is a near-copy"
                parts.append(f"{count} {later} {are} of {earlier} tiles (rotated, flipped, re-saved, resized or "
                             "recoloured)")
        if self.near_copies is not None and self.near_copies.label_conflicts:
            conflicts = self.near_copies.label_conflicts
            parts.append(f"{conflicts} of the near-copies {'carry' if conflicts > 1 else 'carries'} another label than "
                         "the tile copied")
        if self.label_conflicts:
            many = self.label_conflicts > 1
            parts.append(f"{self.label_conflicts} set{'s' if many else ''} of identical tiles "
                         f"carr{'y' if many else 'ies'} two or more labels")
        if not parts:
            return None
        examples = self.examples + (self.near_copies.examples if self.near_copies is not None else ())
        return "; ".join(parts) + f" (e.g. {examples[0]})"


def find_duplicates(ids: Mapping[str, Sequence[str]], labels: Mapping[str, np.ndarray],
                    digests: Mapping[str, Sequence[bytes]],
                    hashes: Mapping[str, np.ndarray] | None = None) -> DuplicateTiles:
    """Copies across and within the splits train/val/test, from each split's tile ids, labels and digests; and,
    given their perceptual hashes (near_copies.perceptual_hashes), near-copies across them."""
    first_seen: dict[bytes, tuple[str, int]] = {}  # digest -> (split, row) where it first occurs
    labels_of: dict[bytes, set[int]] = {}
    across = {f"{later}_in_{earlier}": 0 for later, earlier in CROSS_SPLIT_PAIRS}
    within = {name: 0 for name in ids}
    across_examples: list[str] = []
    within_examples: list[str] = []
    copied: dict[str, list[str]] = {later: [] for later, _ in CROSS_SPLIT_PAIRS}
    for name in ids:
        for row, digest in enumerate(digests[name]):
            labels_of.setdefault(digest, set()).add(int(labels[name][row]))
            if digest not in first_seen:
                first_seen[digest] = (name, row)
                continue
            earlier, earlier_row = first_seen[digest]
            if earlier == name:
                within[name] += 1
            else:
                across[f"{name}_in_{earlier}"] += 1
                copied[name].append(ids[name][row])
            found_in = within_examples if earlier == name else across_examples
            if len(found_in) < MAX_EXAMPLES:
                found_in.append(f"'{ids[name][row]}' = '{ids[earlier][earlier_row]}'")
    conflicts = [digest for digest, found in labels_of.items() if len(found) > 1]
    # the worse findings first: identical tiles under two labels, then copies across splits
    examples = [_conflict_example(conflicts[0], ids, labels, digests)] if conflicts else []
    examples += across_examples + within_examples
    near = None if hashes is None else find_near_copies(ids, labels, hashes, copied, MAX_EXAMPLES)
    return DuplicateTiles(across, within, len(conflicts), tuple(examples[:MAX_EXAMPLES]),
                          {name: tuple(found) for name, found in copied.items()}, near)


def _conflict_example(digest: bytes, ids: Mapping[str, Sequence[str]], labels: Mapping[str, np.ndarray],
                      digests: Mapping[str, Sequence[bytes]]) -> str:
    """"'id' = 'id'" of two identical tiles with different labels."""
    found: dict[int, str] = {}
    for name in ids:
        for row, other in enumerate(digests[name]):
            if other == digest:
                found.setdefault(int(labels[name][row]), ids[name][row])
    first, second = list(found.values())[:2]
    return f"'{first}' = '{second}'"


def check_duplicates(mode: str, source: str, ids: Mapping[str, Sequence[str]], labels: Mapping[str, np.ndarray],
                     digests: Mapping[str, Sequence[bytes]],
                     hashes: Mapping[str, np.ndarray] | None = None) -> DuplicateTiles:
    """The copies (and near-copies, given `hashes`) in the splits of `source` (mode 'warn' or 'error'); warned
    about, or refused with mode 'error'."""
    found = find_duplicates(ids, labels, digests, hashes)
    problem = found.problem()
    if problem and mode == "error":
        raise DataError(f"in {source}, {problem}: the test accuracy would not be a held-out one; remove the copies, "
                        "split by patient or slide with spec.data.group_by, or set spec.data.duplicates='warn'")
    if problem:
        logger.warning("in %s, %s: a copied tile is not held out, and its accuracy flatters the model "
                       "(data.json lists examples; spec.data.duplicates='error' refuses such splits)", source, problem)
    return found
