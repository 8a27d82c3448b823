"""Deterministic stratified train/val/test split.

`spec.data.split` is three numbers (train, val, test):
- all integers: tile counts. Each split's total is shared across classes in proportion to the
  class sizes by the largest-remainder method, so the totals are exact;
- any float: fractions in [0, 1] summing to at most 1, applied to every class separately
  (largest remainder inside the class; where val and test tie for a spare tile, a bit of the
  class name's crc32 picks which, so neither gets every tie). Write (0.8, 0.2, 0), not
  (1, 0, 0), for fractions.
Every class must get at least one tile in every split whose count or fraction is not zero.
(A source split in folders of its own is read by `dataset.load_dataset`, which uses this module
only to hold a share of its train folder out for validation.)

Which tiles go where: each class's tiles are sorted by id and shuffled with
`np.random.default_rng([split_seed, crc32(class name)])`, then cut into train/val/test. A
class's split therefore depends on the seed, its own tiles and its counts only: not on
filesystem order, the machine, or which other classes are selected. Each split is returned
sorted by tile id.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence

import numpy as np

from data_pipeline.errors import DataError

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
# Names (lower case) a source's own splits go by, by the split they mean.
SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}


def named_split_hint(names: Sequence[str]) -> str | None:
    """The spec.data.split that uses a source's own splits called `names`, or None without a train and a test."""
    by_split = {SPLIT_WORDS.get(name.lower()): name for name in names}
    if "train" not in by_split or "test" not in by_split:
        return None
    val = repr(by_split["val"]) if "val" in by_split else "0.15"
    hint = f"spec.data.split=\"({by_split['train']!r}, {val}, {by_split['test']!r})\""
    return hint + ("" if "val" in by_split else f" (0.15: the share of {by_split['train']!r} held out for validation)")


def _largest_remainder(
    numerators: np.ndarray, denominator: int, total: int, tie_rank: np.ndarray | None = None
) -> np.ndarray:
    """Integers close to numerators / denominator that sum to `total`.

    Equal remainders go to the lower `tie_rank` (default: the lower index).
    """
    base = numerators // denominator
    remainders = numerators - base * denominator
    extra = int(total - base.sum())
    tie_rank = np.arange(len(base)) if tie_rank is None else np.asarray(tie_rank)
    order = np.lexsort((tie_rank, -remainders))
    base[order[: max(extra, 0)]] += 1
    return base


def _split_tie_rank(class_name: str) -> np.ndarray:
    """Which of train/val/test gets a tied spare tile first: train, then val or test by the name's hash."""
    return np.array([0, 1, 2]) if zlib.crc32(class_name.encode("utf-8")) & 1 else np.array([0, 2, 1])


def parse_split(split: Sequence[float]) -> tuple[bool, tuple[float, ...]]:
    """Validate `spec.data.split`; returns (is_counts, the three values)."""
    values = tuple(split) if isinstance(split, (list, tuple)) else None
    if values is None or len(values) != 3:
        raise DataError(f"spec.data.split must be three numbers (train, val, test), got {split!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise DataError(f"spec.data.split must hold numbers, got {split!r}")
        if value < 0:
            raise DataError(f"spec.data.split has a negative value: {split!r}")
    is_counts = all(isinstance(v, (int, np.integer)) for v in values)
    if is_counts and sum(values) == 0:
        raise DataError(f"spec.data.split {split!r} selects no tiles")
    if not is_counts:
        if any(v > 1 for v in values) or sum(values) > 1 + 1e-9:
            raise DataError(
                f"spec.data.split {split!r}: fractions must lie in [0, 1] and sum to at most 1; "
                "for tile counts use integers only"
            )
        if sum(values) <= 0:
            raise DataError(f"spec.data.split {split!r} selects no tiles")
    return is_counts, tuple(int(v) if is_counts else float(v) for v in values)


def split_counts(
    class_sizes: Sequence[int], class_names: Sequence[str], split: Sequence[float]
) -> np.ndarray:
    """Tiles per (class, split) as an int array (num_classes, 3); DataError if impossible."""
    is_counts, values = parse_split(split)
    sizes = np.asarray(class_sizes, dtype=np.int64)
    available = int(sizes.sum())
    if is_counts:
        if sum(values) > available:
            raise DataError(
                f"spec.data.split {tuple(values)} asks for {sum(values)} tiles but the selected "
                f"classes have {available}; lower the counts or use fractions"
            )
        for name, total in zip(SPLIT_NAMES, values):
            if 0 < total < len(sizes):
                raise DataError(
                    f"spec.data.split {tuple(values)} gives the {name} split {total} "
                    f"tile{'s' if total != 1 else ''} for "
                    f"{len(sizes)} classes, but a stratified split needs at least one tile of every "
                    f"class in every split: give {name} at least {len(sizes)} or select fewer classes"
                )
        columns = [_largest_remainder(sizes * int(total), max(available, 1), int(total)) for total in values]
        counts = _repair_overflow(np.stack(columns, axis=1), sizes, values)
    else:
        counts = np.stack([_fraction_counts(int(size), values, name) for size, name in zip(sizes, class_names)])
    _check_counts(counts, sizes, class_names, values, is_counts)
    return counts


def _fraction_counts(size: int, fractions: Sequence[float], class_name: str) -> np.ndarray:
    """Train/val/test tiles of one class of `size` tiles for `fractions`."""
    scale = 10**9  # fractions as exact integers: quota = size * fraction
    numerators = size * np.array([round(v * scale) for v in fractions], dtype=np.int64)
    # The tolerance keeps (1/3, 1/3, 1/3) from dropping a tile to rounding.
    total = int(np.floor(size * sum(fractions) + 1e-6))
    return _largest_remainder(numerators, scale, total, _split_tie_rank(class_name))


def _repair_overflow(counts: np.ndarray, sizes: np.ndarray, totals: Sequence[int]) -> np.ndarray:
    """Move rounded-up tiles away from classes that would need more tiles than they have.

    Per-split rounding can round one class up in every split (ties go to the lower index).
    While a class is over its size, its least-deserved round-up (smallest remainder) moves to
    the class with spare tiles that is furthest below its quota in that split.
    """
    available = max(int(sizes.sum()), 1)
    quotas = sizes[:, None] * np.asarray(totals, dtype=np.float64)[None, :] / available
    while True:
        over = np.flatnonzero(counts.sum(axis=1) > sizes)
        spare = counts.sum(axis=1) < sizes
        if len(over) == 0 or not spare.any():
            return counts
        row = over[0]
        remainders = quotas[row] - np.floor(quotas[row])
        rounded_up = np.where(counts[row] > np.floor(quotas[row]), remainders, np.inf)
        column = int(np.argmin(rounded_up))
        if not np.isfinite(rounded_up[column]):
            return counts  # cannot happen when the totals fit; _check_counts reports it
        deficit = np.where(spare, quotas[:, column] - counts[:, column], -np.inf)
        counts[row, column] -= 1
        counts[int(np.argmax(deficit)), column] += 1


def _check_counts(
    counts: np.ndarray, sizes: np.ndarray, class_names: Sequence[str], values: Sequence[float], is_counts: bool
) -> None:
    """Every class must fit its counts and have a tile in every split asked for."""
    used_splits = np.asarray(values) > 0
    for name, size, row in zip(class_names, sizes, counts):
        if row.sum() > size:
            raise DataError(
                f"class '{name}' has {size} tiles but spec.data.split {tuple(values)} needs "
                f"{int(row.sum())} of it ({', '.join(map(str, row))}); lower the counts"
            )
        empty = [SPLIT_NAMES[i] for i in range(3) if used_splits[i] and row[i] == 0]
        if empty:
            got = ", ".join(f"{n} {c}" for n, c in zip(SPLIT_NAMES, row))
            if is_counts:
                fix = (f"the counts are shared in proportion to class sizes, so raise the "
                       f"{'/'.join(empty)} count, add tiles, or drop the class from spec.data.classes")
            else:
                fix = (f"with these fractions every class of {_smallest_class(values, name)} tiles or more works: "
                       "add tiles, drop the class from spec.data.classes, or give "
                       f"{'/'.join(empty)} a larger fraction")
            raise DataError(
                f"class '{name}' has {size} tiles, too few for spec.data.split {tuple(values)}: it "
                f"would get no {'/'.join(empty)} tiles ({got}); {fix}"
            )


def _smallest_class(fractions: Sequence[float], class_name: str) -> int:
    """The class size from which on every size gets a tile in every split of nonzero fraction.

    Largest-remainder rounding is not monotone in the size (a class of 9 may work where 10
    does not), but every size of at least 1 / (smallest nonzero fraction) works.
    """
    used = np.asarray(fractions) > 0
    sure = int(np.ceil(1 / min(f for f in fractions if f > 0) - 1e-9))
    failing = [size for size in range(1, sure) if not (_fraction_counts(size, fractions, class_name)[used] > 0).all()]
    return failing[-1] + 1 if failing else 1


def check_split_seed(seed: object) -> int:
    """spec.data.split_seed as an int; DataError unless it is a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"spec.data.split_seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def split_indices(
    labels: np.ndarray,
    ids: Sequence[str],
    class_names: Sequence[str],
    split: Sequence[float],
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the train, val and test tiles (see the module docstring for the rules)."""
    seed = check_split_seed(seed)
    labels = np.asarray(labels)
    members = [[] for _ in class_names]
    for index in sorted(range(len(ids)), key=lambda i: (ids[i], i)):
        members[int(labels[index])].append(index)
    counts = split_counts([len(m) for m in members], class_names, split)
    if counts.sum() < len(ids):
        logger.warning("spec.data.split=%s puts %d of the %d tiles of the selected classes in a split; the other %d "
                       "are in none (fractions summing to 1 use every tile)", tuple(split), counts.sum(), len(ids),
                       len(ids) - counts.sum())
    parts: list[list[int]] = [[], [], []]
    for name, tiles, row in zip(class_names, members, counts):
        rng = np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])
        shuffled = np.asarray(tiles, dtype=np.int64)[rng.permutation(len(tiles))]
        bounds = np.cumsum(row)
        for part, start, stop in zip(parts, (0, *bounds[:2]), bounds):
            part.extend(shuffled[start:stop].tolist())
    return tuple(
        np.asarray(sorted(part, key=lambda i: (ids[i], i)), dtype=np.int64) for part in parts
    )
