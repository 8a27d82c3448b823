"""95% confidence intervals of accuracy, balanced accuracy and each class's recall, precision, specificity and F1.

Accuracy, recall, precision and specificity are proportions of tiles, so they get Wilson score
intervals (Wilson 1927, the usual interval for accuracy, sensitivity and specificity in diagnostic
studies): unlike a percentile bootstrap, it does not collapse to [1, 1] when every tile is right.
With several seeds (or folds) on the same tiles, the proportion is pooled over their predictions
and the number of trials is that of tiles, not of predictions: seeds are not extra tiles.

F1 is no proportion, and a percentile bootstrap of it collapses as well: to [1, 1] for a class told
apart on every tile, to [0, 0] for one never predicted. So F1 gets the Wilson interval of the
proportion it is a monotone function of: J = TP / (TP + FP + FN), the share of true positives among
the tiles that are the class or are called it (its Jaccard index), with F1 = 2J / (1 + J). Given how
many tiles those are, TP is binomial with J's population value, so the interval is as exact as
recall's. Balanced accuracy, the mean recall over the classes, combines the recalls' Wilson
intervals by MOVER (Zou & Donner 2008; `mover_interval`): the classes' tiles are independent. Two
classifiers' accuracies on the same tiles differ by an amount whose interval MOVER makes of their
Wilson intervals and the correlation of their outcomes (Newcombe 1998, method 10). AUCs get theirs
in flaxbench.auc_intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np


# The level of every confidence interval flaxbench reports.
CI_LEVEL = 0.95
# Per-class values given a 95% CI, as `<key>_ci` beside `<key>` in a per_class table.
CI_KEYS = ("precision", "recall", "f1", "specificity", "auc")


def wilson_interval(proportion: np.ndarray, trials: np.ndarray, level: float = 0.95) -> np.ndarray:
    """(..., 2): the Wilson score interval of each `proportion` observed over `trials` (NaN where trials is 0)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    p, n = np.asarray(proportion, np.float64), np.asarray(trials, np.float64)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At 0 or 1 the bound is exactly 0 or 1 (rounding leaves 1 - 3e-16, which would print as below 100%).
    low = np.where(p <= 0.0, 0.0, np.clip(centre - half, 0.0, 1.0))
    high = np.where(p >= 1.0, 1.0, np.clip(centre + half, 0.0, 1.0))
    interval = np.stack([low, high], axis=-1)
    return np.where((n > 0)[..., None], interval, np.nan)


def accuracy_interval(correct: np.ndarray, trials: np.ndarray | None = None, level: float = 0.95
                      ) -> tuple[float, float]:
    """The Wilson interval of accuracy from `correct[i]` right predictions of `trials[i]` (default 1) on tile i.

    With several seeds on one tile set the proportion is pooled over their predictions, the trials
    are the tiles.
    """
    correct = np.asarray(correct, np.float64).reshape(-1)
    trials = np.ones_like(correct) if trials is None else np.asarray(trials, np.float64).reshape(-1)
    if correct.size == 0 or trials.shape != correct.shape:
        raise ValueError(f"need one count of right and made predictions per tile, got {correct.size} and {trials.size}")
    if np.any(trials <= 0) or np.any(correct < 0) or np.any(correct > trials):
        raise ValueError("need 0 <= correct[i] <= trials[i] and trials[i] > 0 for every tile")
    low, high = wilson_interval(correct.sum() / trials.sum(), correct.size, level)
    return float(low), float(high)


def class_cis(correct: np.ndarray, trials: np.ndarray, labels: np.ndarray, predicted: np.ndarray,
              level: float = 0.95) -> dict[str, np.ndarray]:
    """{"recall", "precision", "specificity", "f1": (classes, 2)} Wilson intervals from per-tile pooled predictions.

    Per tile i: `correct[i]` of its `trials[i]` predictions were right (several seeds pooled), `labels[i]` is
    its true class and `predicted[i, c]` counts its predictions of class c. A class's recall is over its
    tiles, its specificity over the other tiles, its precision over the tiles predicted as it (with several
    seeds, their mean number) and its F1 (through J, as the module's docstring says) over the tiles that are
    it or are predicted as it; NaN where there are none.
    """
    correct, trials = np.asarray(correct, np.float64), np.asarray(trials, np.float64)
    labels, predicted = np.asarray(labels, np.int64), np.asarray(predicted, np.float64)
    if correct.size == 0 or not correct.size == trials.size == labels.size == len(predicted) or predicted.ndim != 2:
        raise ValueError("need equally many correct, trials, labels and predicted (tiles, classes), at least one tile")
    if np.any(predicted.sum(axis=1) != trials) or labels.max() >= predicted.shape[1]:
        raise ValueError("each tile's predicted counts must add up to its trials, and labels index its classes")
    of_class = np.eye(predicted.shape[1], dtype=bool)[labels]  # (tiles, classes)
    said = predicted / trials[:, None]  # each tile's share of predictions per class
    right = (correct / trials)[:, None] * of_class  # the true positives' share
    recall_tiles, other_tiles = of_class.sum(axis=0), (~of_class).sum(axis=0)
    called, union = said.sum(axis=0), np.where(of_class, 1.0, said).sum(axis=0)

    def ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
        return np.divide(top, bottom, out=np.zeros_like(top, dtype=np.float64), where=bottom > 0)

    found = right.sum(axis=0)
    return {
        "recall": wilson_interval(ratio(found, recall_tiles), recall_tiles, level),
        "precision": wilson_interval(ratio(found, called), called, level),
        "specificity": wilson_interval(1 - ratio(called - found, other_tiles), other_tiles, level),
        "f1": f1_from_jaccard(wilson_interval(ratio(found, union), union, level)),
    }


def balanced_accuracy_interval(correct: np.ndarray, trials: np.ndarray, labels: np.ndarray, level: float = 0.95
                               ) -> tuple[float, float]:
    """The CI of balanced accuracy (mean recall over the classes with tiles) from `correct[i]` right of `trials[i]`
    predictions on tile i of class `labels[i]` (seeds pooled): its recalls' Wilson intervals combined by MOVER."""
    correct, trials = np.asarray(correct, np.float64).reshape(-1), np.asarray(trials, np.float64).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if correct.size == 0 or not correct.size == trials.size == labels.size:
        raise ValueError("need equally many correct, trials and labels, at least one tile")
    tiles = np.bincount(labels)
    present = tiles > 0
    recall = np.bincount(labels, weights=correct / trials)[present] / tiles[present]
    return mover_interval(recall, wilson_interval(recall, tiles[present], level))


def mover_interval(estimates: np.ndarray, intervals: np.ndarray, correlation: np.ndarray | None = None
                   ) -> tuple[float, float]:
    """The CI of the mean of `estimates` from their CIs `intervals` (k, 2) by MOVER (Zou & Donner 2008): each bound
    the mean less or plus the root of the estimates' distances to their bounds, squared and weighted by their
    `correlation` (default: independent), over k; within [0, 1] as the intervals are."""
    estimates, intervals = np.asarray(estimates, np.float64), np.asarray(intervals, np.float64)
    correlation = np.eye(estimates.size) if correlation is None else np.asarray(correlation, np.float64)
    below, above = estimates - intervals[:, 0], intervals[:, 1] - estimates
    mean = float(estimates.mean())
    return (max(0.0, mean - float(np.sqrt(max(0.0, below @ correlation @ below))) / estimates.size),
            min(1.0, mean + float(np.sqrt(max(0.0, above @ correlation @ above))) / estimates.size))


def paired_difference_interval(right_a: np.ndarray, right_b: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The CI of accuracy(A) - accuracy(B) from their outcomes on the same tiles: Newcombe's (1998) method 10, MOVER
    of their Wilson intervals with the phi correlation of their outcomes, its numerator AD - BC continuity-corrected
    as the method has it (less n / 2 above n / 2, 0 from 0 to n / 2; 0 where a margin is empty).

    An outcome is right (1) or wrong (0), or for a row of several seeds the share of its seeds right on the tile:
    the 2x2 table is then the mean of those of every pairing of A's seeds with B's.
    """
    a, b = (np.asarray(x, np.float64).reshape(-1) for x in (right_a, right_b))
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"need paired outcomes of equal, nonzero length, got {a.size} and {b.size}")
    both, only_a, only_b = float(a @ b), float(a @ (1 - b)), float((1 - a) @ b)
    neither = a.size - both - only_a - only_b
    margins = float(both + only_a) * float(only_b + neither) * float(both + only_b) * float(only_a + neither)
    cross = float(both) * neither - float(only_a) * only_b
    corrected = cross - a.size / 2 if cross > a.size / 2 else min(cross, 0.0)
    phi = corrected / np.sqrt(margins) if margins > 0 else 0.0
    p_a, p_b = float(a.mean()), float(b.mean())
    (low_a, high_a), (low_b, high_b) = wilson_interval(np.array([p_a, p_b]), a.size, level)
    below = np.sqrt(max(0.0, (p_a - low_a) ** 2 - 2 * phi * (p_a - low_a) * (high_b - p_b) + (high_b - p_b) ** 2))
    above = np.sqrt(max(0.0, (high_a - p_a) ** 2 - 2 * phi * (high_a - p_a) * (p_b - low_b) + (p_b - low_b) ** 2))
    return p_a - p_b - float(below), p_a - p_b + float(above)


def f1_from_jaccard(jaccard: np.ndarray) -> np.ndarray:
    """F1 = 2J / (1 + J) of each Jaccard index J = TP / (TP + FP + FN) (NaN stays NaN)."""
    jaccard = np.asarray(jaccard, np.float64)
    return 2 * jaccard / (1 + jaccard)


def with_class_cis(per_class: dict[str, dict[str, Any]], classes: Sequence[str],
                   cis: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """`per_class` ({class: {key: value}}) with `<key>_ci` = [low, high] of each CI_KEYS key from `cis` ({key:
    (classes, 2)} in `classes` order), None where `cis` lacks the key or the interval is undefined."""
    table = {}
    for k, name in enumerate(classes):
        table[name] = dict(per_class[name])
        for key in CI_KEYS:
            interval = cis[key][k] if key in cis else None
            table[name][f"{key}_ci"] = (None if interval is None or np.isnan(interval).any()
                                        else [float(x) for x in interval])
    return table
