"""A report row's test predictions pooled over its runs (seeds, folds): per tile and per class, with their 95% CIs."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from flaxbench import metrics
from flaxbench.auc_intervals import class_auc_cis, macro_auc_interval
from flaxbench.class_intervals import (
    CI_LEVEL, accuracy_interval, balanced_accuracy_interval, class_cis, with_class_cis,
)
from flaxbench.group_design_effects import (
    group_balanced_accuracy_interval, group_class_auc_intervals, group_macro_auc_interval,
)
from flaxbench.group_intervals import (
    GroupInterval, group_accuracy_interval, group_class_intervals, group_pattern, recorded_groups,
    with_class_group_intervals,
)
from flaxbench.report.collect import Run, RunGroup


def pooled_confusion_matrix(group: RunGroup) -> np.ndarray | None:
    """Sum of the confusion matrices of a row's seeds; None unless every seed has one."""
    matrices = [run.results.get("confusion_matrix") for run in group.runs]
    if any(cm is None for cm in matrices):
        return None
    return np.sum([np.asarray(cm, dtype=np.int64) for cm in matrices], axis=0)


def per_class(group: RunGroup) -> dict[str, dict[str, Any]] | None:
    """{class: precision, recall, F1, specificity (from the seeds' pooled confusion matrix), AUC (mean over seeds),
    and each one's 95% CI as `<key>_ci` ([low, high], None where not recorded or undefined); for a row whose tiles
    name their patients or slides, each also over them, `<key>_ci_groups` and `<key>_groups`}; None without
    confusion matrices."""
    cm = pooled_confusion_matrix(group)
    classes = group.runs[0].results.get("classes")
    if cm is None or not classes or len(classes) != len(cm):
        return None
    table: dict[str, dict[str, Any]] = dict(metrics.per_class_metrics(cm, classes))
    for name in classes:
        of_runs = [((run.results.get("per_class") or {}).get(name) or {}).get("auc") for run in group.runs]
        table[name] = {**table[name], "auc": float(np.mean(of_runs)) if all(a is not None for a in of_runs) else None}
    table = with_class_cis(table, classes, _per_class_cis(group, [table[name]["auc"] for name in classes]))
    return with_class_group_intervals(table, classes, _per_class_group_intervals(group, len(classes)))


def _per_class_group_intervals(group: RunGroup, num_classes: int) -> dict[str, list[GroupInterval]] | None:
    """Each class's 95% CIs over the row's test tiles' patients or slides: its proportions' and F1's
    (group_class_intervals), its AUC's (group_class_auc_intervals); None for a row split tile by tile, or without
    per-tile predictions."""
    grouped = _grouped_tiles(group, num_classes)
    if grouped is None:
        return None
    found: dict[str, list[GroupInterval]] = group_class_intervals(*grouped[0], grouped[1])
    placed = _placed_with_groups(group)
    if placed is not None:
        found["auc"] = group_class_auc_intervals(*placed)
    return found


def _per_class_cis(group: RunGroup, aucs: list[float | None]) -> dict[str, np.ndarray]:
    """{"precision", "recall", "f1", "specificity", "auc": (classes, 2) 95% CIs} of the row's pooled test tiles
    (flaxbench.class_intervals), AUC's about the classes' `aucs`; empty where the runs did not record per-tile
    predictions."""
    pooled = _pooled_tiles(group, len(aucs))
    if pooled is None:
        return {}
    return {**class_cis(*pooled, level=CI_LEVEL), "auc": class_auc_cis(aucs, pooled[2], level=CI_LEVEL)}


def tile_outcomes(runs: tuple[Run, ...]) -> dict[str, bool] | None:
    """{tile id: predicted correctly} over `runs` (one run, or one per fold); None without per-tile predictions."""
    outcomes = {}
    for run in runs:
        predictions = run.results.get("test_predictions")
        if predictions is None:
            return None
        outcomes.update((tile, label == predicted) for tile, label, predicted
                        in zip(predictions["ids"], predictions["labels"], predictions["predictions"]))
    return outcomes


def seed_shares(group: RunGroup) -> tuple[dict[str, float], int] | None:
    """({tile id: share of the row's seeds right on it}, seeds) over the tiles every seed tested (each seed's run, or
    its runs of the folds); None without per-tile predictions."""
    by_seed: dict[Any, list[Run]] = {}
    for k, run in enumerate(group.runs):  # a run of unknown seed is a seed of its own, except among folds
        key = run.seed if run.seed is not None or group.folds is not None else f"run {k}"
        by_seed.setdefault(key, []).append(run)
    outcomes = [tile_outcomes(tuple(runs)) for runs in by_seed.values()]
    if any(seed is None for seed in outcomes):
        return None
    tiles = set.intersection(*(set(seed) for seed in outcomes))
    return {tile: sum(seed[tile] for seed in outcomes) / len(outcomes) for tile in tiles}, len(outcomes)


class PooledTiles(NamedTuple):
    """A row's test predictions per tile id (sorted), its seeds' predictions on one tile pooled."""

    correct: np.ndarray  # (tiles,) predictions that were right
    trials: np.ndarray  # (tiles,) predictions made
    labels: np.ndarray  # (tiles,) true class
    predicted: np.ndarray  # (tiles, classes) predictions of each class


def _pooled_tiles(group: RunGroup, num_classes: int | None = None) -> PooledTiles | None:
    """The row's test predictions pooled per tile id over its seeds (and folds); None without per-tile predictions.

    `num_classes` sizes `predicted` (default: the largest class predicted or true, plus one)."""
    pooled = _pooled_by_id(group, num_classes)
    return None if pooled is None else pooled[1]


def _pooled_by_id(group: RunGroup, num_classes: int | None = None) -> tuple[list[str], PooledTiles] | None:
    """(the tile ids, sorted; _pooled_tiles in their order)."""
    rows: dict[str, list] = {}  # tile id -> [true class, predicted classes]
    for run in group.runs:
        predictions = run.results.get("test_predictions")
        if predictions is None:
            return None
        for tile, label, predicted in zip(predictions["ids"], predictions["labels"], predictions["predictions"]):
            rows.setdefault(tile, [int(label), []])[1].append(int(predicted))
    if not rows:
        return None
    tiles = sorted(rows)
    labels = np.array([rows[t][0] for t in tiles])
    said = [np.asarray(rows[t][1]) for t in tiles]
    largest = max(int(labels.max()), max(int(p.max()) for p in said))
    if num_classes is not None and largest >= num_classes:  # not the row's classes: no per-class values
        return None
    width = num_classes or largest + 1
    predicted = np.stack([np.bincount(p, minlength=width) for p in said])
    correct = np.array([int(np.sum(p == label)) for p, label in zip(said, labels)])
    return tiles, PooledTiles(correct, predicted.sum(axis=1), labels, predicted)


def accuracy_ci_pct(group: RunGroup) -> tuple[float, float] | None:
    """95% Wilson CI (in %) of the row's pooled test accuracy; None without per-tile predictions.

    With several seeds the accuracy pools their predictions and the trials are the tiles, so seeds
    that share a test set do not count as extra independent tiles.
    """
    pooled = _pooled_tiles(group)
    if pooled is None:
        return None
    low, high = accuracy_interval(pooled.correct, pooled.trials, CI_LEVEL)
    return 100.0 * low, 100.0 * high


def group_accuracy_ci(group: RunGroup) -> GroupInterval | None:
    """The 95% CI of the row's pooled test accuracy over its test tiles' patients or slides (flaxbench.group_intervals);
    None for a row split tile by tile, or without per-tile predictions."""
    grouped = _grouped_tiles(group)
    if grouped is None:
        return None
    (correct, trials, _, _), groups = grouped
    return group_accuracy_interval(correct, trials, groups)


def _grouped_tiles(group: RunGroup, num_classes: int | None = None) -> tuple[PooledTiles, list[str]] | None:
    """(_pooled_tiles, each tile's group by row_group_pattern); None for a row whose tiles name no patients or
    slides, or without per-tile predictions."""
    pooled = _pooled_by_id(group, num_classes)
    groups = None if pooled is None else recorded_groups(pooled[0], row_group_pattern(group))
    return None if groups is None else (pooled[1], groups)


def balanced_accuracy_ci(group: RunGroup) -> tuple[float, float] | None:
    """95% CI of the row's pooled balanced accuracy (class_intervals.balanced_accuracy_interval: seeds pooled, each
    tile counted once)."""
    pooled = _pooled_tiles(group)
    if pooled is None:
        return None
    correct, trials, labels, _ = pooled
    return balanced_accuracy_interval(correct, trials, labels, CI_LEVEL)


def test_probabilities(group: RunGroup) -> list[tuple[np.ndarray, np.ndarray, list[str]]] | None:
    """(class probabilities (n, C), true classes, tile ids) of each run's test tiles; None where a run did not
    record its class probabilities."""
    runs = []
    for run in group.runs:
        predictions = run.results.get("test_predictions") or {}
        if not predictions.get("probabilities"):
            return None
        runs.append((np.asarray(predictions["probabilities"], np.float64), np.asarray(predictions["labels"], np.int64),
                     list(predictions["ids"])))
    return runs


def macro_auc_ci(group: RunGroup) -> tuple[float, float] | None:
    """The 95% CI of the row's macro AUC (auc_intervals.macro_auc_interval: its classes' AUCs, means over the runs,
    over the distinct test tiles); None where a run did not record per-tile class probabilities."""
    runs = test_probabilities(group)
    if runs is None:
        return None
    probabilities, labels, positions, _ = _placed(runs)
    return macro_auc_interval(probabilities, labels, positions, CI_LEVEL)


def group_balanced_accuracy_ci(group: RunGroup, interval: tuple[float, float] | None) -> GroupInterval | None:
    """The row's balanced accuracy's 95% CI `interval` (balanced_accuracy_ci's) widened for its test tiles' patients
    or slides (flaxbench.group_design_effects); None for a row split tile by tile or without the interval."""
    grouped = _grouped_tiles(group) if interval is not None else None
    if grouped is None:
        return None
    (correct, trials, labels, _), groups = grouped
    return group_balanced_accuracy_interval(correct, trials, labels, groups, interval)


def group_macro_auc_ci(group: RunGroup, interval: tuple[float, float] | None) -> GroupInterval | None:
    """The row's macro AUC's 95% CI `interval` (macro_auc_ci's) widened for its test tiles' patients or slides; None
    for a row split tile by tile, or without the interval or class probabilities."""
    placed = _placed_with_groups(group) if interval is not None else None
    return None if placed is None else group_macro_auc_interval(*placed, interval)


def _placed_with_groups(group: RunGroup) -> tuple[list, list, list[np.ndarray], list[str]] | None:
    """(probabilities, labels, tile positions) per run, as _placed gives them, and the group of each position by
    row_group_pattern; None for a row whose tiles name no patients or slides, or without class probabilities."""
    runs = test_probabilities(group)
    if runs is None:
        return None
    probabilities, labels, positions, ids = _placed(runs)
    groups = recorded_groups(ids, row_group_pattern(group))
    return None if groups is None else (probabilities, labels, positions, groups)


def row_group_pattern(group: RunGroup) -> str | None:
    """The pattern naming the row's tiles' patients or slides (group_intervals.group_pattern of its first run)."""
    results = group.runs[0].results
    return group_pattern(results.get("group_by"), results.get("shared_groups"))


def _placed(runs: list[tuple[np.ndarray, np.ndarray, list[str]]]) -> tuple[list, list, list[np.ndarray], list[str]]:
    """(probabilities, labels, tile positions) per run of `test_probabilities`, every tile id numbered once, and the
    ids in the order of their numbers."""
    place: dict[str, int] = {}
    positions = [np.array([place.setdefault(tile, len(place)) for tile in ids]) for _, _, ids in runs]
    return [p for p, _, _ in runs], [y for _, y, _ in runs], positions, list(place)
