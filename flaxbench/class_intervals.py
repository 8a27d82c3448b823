"""95% confidence intervals of accuracy and of each class's recall, precision, specificity, F1 and AUC.

Accuracy, recall, precision and specificity are proportions of tiles, so they get Wilson score
intervals (Wilson 1927, the usual interval for accuracy, sensitivity and specificity in diagnostic
studies): unlike a percentile bootstrap, it does not collapse to [1, 1] when every tile is right.
With several seeds (or folds) on the same tiles, the proportion is pooled over their predictions
and the number of trials is that of tiles, not of predictions: seeds are not extra tiles.
F1 and AUC are no proportions: a percentile bootstrap over tiles (flaxbench.bootstrap) gives theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from flaxbench import bootstrap


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


def class_proportion_cis(correct: np.ndarray, trials: np.ndarray, labels: np.ndarray, predicted: np.ndarray,
                         level: float = 0.95) -> dict[str, np.ndarray]:
    """{"recall", "precision", "specificity": (classes, 2)} Wilson intervals from per-tile pooled predictions.

    Arguments as `bootstrap.bootstrap_class_f1_ci`'s. A class's recall is over its tiles, its
    specificity over the other tiles, and its precision over the tiles predicted as it (with several
    seeds, their mean number); NaN where there are none.
    """
    correct, trials = np.asarray(correct, np.float64), np.asarray(trials, np.float64)
    labels, predicted = np.asarray(labels, np.int64), np.asarray(predicted, np.float64)
    of_class = np.eye(predicted.shape[1], dtype=bool)[labels]  # (tiles, classes)
    right = (correct[:, None] * of_class).sum(axis=0)
    tried = (trials[:, None] * of_class).sum(axis=0)
    said = predicted.sum(axis=0)
    said_wrongly = said - right
    other_tries = trials.sum() - tried
    predictions_per_tile = trials.sum() / len(trials)

    def ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
        return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)

    return {
        "recall": wilson_interval(ratio(right, tried), of_class.sum(axis=0), level),
        "precision": wilson_interval(ratio(right, said), said / predictions_per_tile, level),
        "specificity": wilson_interval(1 - ratio(said_wrongly, other_tries), (~of_class).sum(axis=0), level),
    }


def class_cis(correct: np.ndarray, trials: np.ndarray, labels: np.ndarray, predicted: np.ndarray, *,
              level: float, num_resamples: int, seed: int) -> dict[str, np.ndarray]:
    """{"recall", "precision", "specificity", "f1": (classes, 2)}: Wilson intervals and F1's bootstrap one."""
    return {**class_proportion_cis(correct, trials, labels, predicted, level),
            "f1": bootstrap.bootstrap_class_f1_ci(correct, trials, labels, predicted, level=level,
                                                  num_resamples=num_resamples, seed=seed)}


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
