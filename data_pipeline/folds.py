"""K-fold cross-validation splits: `spec.data.cv_folds` and `spec.data.cv_fold`.

With `cv_folds=K` every selected tile goes to one of K folds, stratified by class; the run with
`cv_fold=k` tests on fold k, validates (picks its best epoch) on fold k+1 (mod K) and trains on
the other K-2 folds. The K runs of k = 0..K-1 (`study --folds K`) test every tile exactly once,
each on a model that never saw it; `spec.data.split` is not used.

Which tiles go where: each class's tiles are sorted by id and shuffled as `split.split_indices`
shuffles them (`np.random.default_rng([split_seed, crc32(class name)])`), then dealt to the
folds in turn, each class starting where the previous one (in label order) stopped: folds
differ by at most one tile of a class and by at most one tile in all. With `spec.data.group_by`, whole
groups (patients, slides) go to one fold each, largest first, each where it brings the folds'
per-class counts closest to an even share (as `groups` places groups in train/val/test).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from data_pipeline.errors import DataError
from data_pipeline.groups import assign_groups, group_class_counts
from data_pipeline.split import check_split_seed

MIN_FOLDS = 3  # a test, a validation and at least one training fold


def check_folds(folds: object, fold: object) -> tuple[int, int] | None:
    """(fold, folds) of spec.data.cv_fold and cv_folds; None without cross-validation; DataError if invalid."""
    if folds is None and fold is None:
        return None
    if folds is None:
        raise DataError(f"spec.data.cv_fold={fold!r} needs spec.data.cv_folds, the number of folds (e.g. 5); "
                        "or set spec.data.cv_fold=None")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < MIN_FOLDS:
        raise DataError(f"spec.data.cv_folds must be an integer of at least {MIN_FOLDS} (a test, a validation and "
                        f"a training fold) or None, got {folds!r}")
    if fold is None:
        raise DataError(f"spec.data.cv_folds={folds} needs spec.data.cv_fold, the fold (0 to {folds - 1}) this run "
                        f"tests on; `python -m flaxbench study --folds {folds}` trains every fold")
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < folds:
        raise DataError(f"spec.data.cv_fold must be an integer from 0 to {folds - 1} (spec.data.cv_folds={folds}), "
                        f"got {fold!r}")
    return int(fold), int(folds)


def _parts(tile_fold: np.ndarray, ids: Sequence[str], fold: int, folds: int) -> tuple[np.ndarray, ...]:
    """Indices of train, val and test for fold numbers `tile_fold`: test fold `fold`, val the next one."""
    val_fold = (fold + 1) % folds
    masks = ((tile_fold != fold) & (tile_fold != val_fold), tile_fold == val_fold, tile_fold == fold)
    return tuple(np.asarray(sorted(np.flatnonzero(mask), key=lambda i: (ids[i], i)), dtype=np.int64)
                 for mask in masks)


def fold_indices(
    labels: np.ndarray, ids: Sequence[str], class_names: Sequence[str], folds: int, fold: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the train, val and test tiles of fold `fold` of `folds` (see the module docstring)."""
    seed = check_split_seed(seed)
    labels = np.asarray(labels)
    tile_fold = np.full(len(ids), -1, dtype=np.int64)
    next_fold = 0
    for label, name in enumerate(class_names):
        members = sorted(np.flatnonzero(labels == label), key=lambda i: (ids[i], i))
        if len(members) < folds:
            raise DataError(
                f"class '{name}' has {len(members)} tile(s), too few for {folds}-fold cross-validation "
                f"(spec.data.cv_folds={folds}): every fold needs a tile of every class; lower spec.data.cv_folds "
                "or drop the class from spec.data.classes"
            )
        rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
        shuffled = np.asarray(members, dtype=np.int64)[rng.permutation(len(members))]
        tile_fold[shuffled] = (np.arange(len(shuffled)) + next_fold) % folds
        next_fold = (next_fold + len(shuffled)) % folds
    return _parts(tile_fold, ids, fold, folds)


def group_fold_indices(
    labels: np.ndarray, ids: Sequence[str], groups: Sequence[str], class_names: Sequence[str],
    folds: int, fold: int, seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the train, val and test tiles of fold `fold` of `folds`, whole groups to a fold."""
    seed = check_split_seed(seed)
    names, group_of, per_group = group_class_counts(labels, groups, len(class_names))
    if len(names) < folds:
        raise DataError(f"spec.data.group_by finds {len(names)} group(s), too few for {folds} folds of whole groups "
                        f"(spec.data.cv_folds={folds}); lower spec.data.cv_folds or check the pattern")
    targets = np.repeat(per_group.sum(axis=0)[:, None] / folds, folds, axis=1)  # (classes, folds)
    where = assign_groups(per_group, targets, may_leave_out=False, seed=seed)
    if where is None:
        holding = [int((per_group[:, c] > 0).sum()) for c in range(len(class_names))]
        c = int(np.argmin(holding))
        raise DataError(
            f"with whole groups (spec.data.group_by) no way was found to give every one of {folds} folds tiles of "
            f"every class: class '{class_names[c]}' comes from {holding[c]} group(s); lower spec.data.cv_folds, "
            "drop such classes from spec.data.classes, or add tiles of more patients or slides"
        )
    return _parts(where[group_of], ids, fold, folds)
