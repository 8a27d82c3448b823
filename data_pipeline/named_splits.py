"""Sources that come split already: `spec.data.split` names their splits (folders, or TFDS splits).

`('train', 'val', 'test')` takes each split as the source has it; `('train', 0.15, 'test')`
holds a share (a fraction, or a tile count) of the train split out for validation, divided as
numeric splits are (stratified, by `split_seed`, by whole groups with `group_by`). Every split
must hold the same classes (labelled in the train split's order) and tiles of one size.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from data_pipeline.errors import DataError
from data_pipeline.sources.tiles import SourceTiles

Reader = Callable[[str, Sequence[str] | None], SourceTiles]  # (split name, classes or None) -> its tiles
Divider = Callable[[SourceTiles, Sequence[float]], tuple[np.ndarray, np.ndarray, np.ndarray]]
Part = tuple[SourceTiles, np.ndarray | None]  # a split's tiles, and the rows of them it takes (None: all)


def names_splits(split: Any) -> bool:
    """True if `spec.data.split` names the source's own splits (folders or TFDS splits) rather than giving numbers."""
    return isinstance(split, (list, tuple)) and any(isinstance(value, str) for value in split)


def named_split_form(split: Sequence[Any]) -> tuple[str, str | int | float, str]:
    """(train split, val split or the share of train held out, test split) by name; DataError otherwise."""
    values = tuple(split)
    usage = ("name the source's train and test splits (folders, or TFDS splits), and its val split or the share of "
             "train to hold out for validation: ('train', 'val', 'test') or ('train', 0.15, 'test')")
    if len(values) != 3 or not (isinstance(values[0], str) and isinstance(values[2], str)):
        raise DataError(f"spec.data.split {values!r}: {usage}")
    val = values[1]
    named = [value for value in values if isinstance(value, str)]
    if len({os.path.normpath(name) for name in named}) != len(named):
        raise DataError(f"spec.data.split {values!r} names one split of the source twice, so two splits would hold "
                        "the same tiles; name a split of its own for each")
    if isinstance(val, str):
        return values
    if isinstance(val, bool) or not isinstance(val, (int, float)) or not (
            (isinstance(val, int) and val >= 1) or (isinstance(val, float) and 0 < val < 1)):
        raise DataError(f"spec.data.split {values!r}: the val share must be a fraction in (0, 1) or a tile "
                        f"count of at least 1, got {val!r}; {usage}")
    return values


def split_sources(split: Sequence[Any]) -> tuple[str, str, str]:
    """The source split that train, val and test are each read from (val from train when held out of it)."""
    train_name, val, test_name = named_split_form(split)
    return train_name, val if isinstance(val, str) else train_name, test_name


def _same_classes(tiles: SourceTiles, classes: tuple[str, ...], where: str, train_where: str) -> SourceTiles:
    """`tiles` labelled in the order of `classes`; DataError if it holds other classes."""
    if set(tiles.classes) != set(classes):
        missing, extra = sorted(set(classes) - set(tiles.classes)), sorted(set(tiles.classes) - set(classes))
        detail = "; ".join(part for part in (
            f"it lacks {', '.join(missing)}" if missing else "", f"it has {', '.join(extra)} too" if extra else "") if part)
        raise DataError(f"{where} has other classes than {train_where} ({detail}); give every split the same "
                        "classes, or list the classes to use in spec.data.classes")
    order = np.asarray([classes.index(name) for name in tiles.classes], dtype=np.int32)
    return dataclasses.replace(tiles, labels=order[tiles.labels], classes=classes)


def read_named_splits(
    split: Sequence[Any], read: Reader, where: Callable[[str], str], requested: Sequence[str] | None, divide: Divider
) -> tuple[Part, Part, Part]:
    """Train, val and test of a source with splits of its own, read with `read` (`where` names one in errors)."""
    train_name, val, test_name = named_split_form(split)
    train = read(train_name, requested)
    others = []
    for name in ((val, test_name) if isinstance(val, str) else (test_name,)):
        tiles = _same_classes(read(name, train.classes if requested is not None else None), train.classes,
                              where(name), f"'{train_name}'")
        others.append(tiles)
    if isinstance(val, str):
        return (train, None), (others[0], None), (others[1], None)
    if isinstance(val, int) and val >= len(train.labels):
        raise DataError(f"spec.data.split holds out {val} tiles of {where(train_name)} for validation, but it has "
                        f"{len(train.labels)} (of the selected classes); hold out fewer, or a fraction")
    held_out = (len(train.labels) - val, val, 0) if isinstance(val, int) else (1.0 - val, val, 0.0)
    try:
        train_rows, val_rows, _ = divide(train, held_out)
    except DataError as e:
        raise DataError(f"holding out {val!r} of {where(train_name)} for validation: {e}") from None
    return (train, train_rows), (train, val_rows), (others[0], None)
