"""95% CIs over patients or slides of balanced accuracy, macro AUC and each class's AUC, from design effects.

These are no proportions of tiles, so group_intervals' Wilson interval of an effective number of
tiles does not fit them. Their tile-level intervals (MOVER's of their classes' intervals) are
widened instead by the same two factors. The first is the square root of the design effect: the
variance of the statistic with whole groups as the units over its variance with independent tiles,
both from its linearisation (each tile's influence on it, summed per group; for AUC the structural
components of DeLong et al. 1988, summed per cluster as in Obuchowski 1997), at least 1. The second
is t / z, t of groups - 1 degrees of freedom (Korn and Graubard). A class's AUC gets its score
interval (auc_intervals.auc_interval) with its variance times the design effect and t in place of z.
A class whose tiles all come from one group adds to neither variance's between-group part: how its
recall varies over patients cannot be seen, as the per-class intervals over groups say ('1 group').
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from flaxbench.auc_intervals import auc_interval, class_auc_influences, macro_auc_influence, tile_labels
from flaxbench.class_intervals import CI_LEVEL
from flaxbench.group_intervals import MIN_GROUPS, GroupInterval, widened_about


def design_effect(influence: np.ndarray, groups: Sequence[str]) -> float:
    """The variance of a statistic with each tile's `influence` on it summed by group, over its variance with every
    tile on its own (at least 1; 1 where the tiles give it none)."""
    influence = np.asarray(influence, np.float64).reshape(-1)
    _, of_group = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)
    if of_group.size != influence.size:
        raise ValueError(f"need a group per tile, got {of_group.size} groups and {influence.size} tiles")
    count, tiles = int(of_group.max()) + 1, influence.size
    if count < MIN_GROUPS:
        return 1.0
    over_tiles = tiles / (tiles - 1) * float(np.sum(influence ** 2))
    over_groups = count / (count - 1) * float(np.sum(np.bincount(of_group, weights=influence) ** 2))
    return max(1.0, over_groups / over_tiles) if over_tiles > 0 else 1.0


def widened_interval(estimate: float, interval: Sequence[float], groups: Sequence[str], influence: np.ndarray,
                     level: float = CI_LEVEL) -> GroupInterval:
    """The tile-level `interval` of `estimate` widened about it by sqrt(design effect) * t / z (the module's
    docstring says why), within [0, 1]; no interval from fewer than MIN_GROUPS groups."""
    count = len(set(np.asarray(groups).reshape(-1).tolist()))
    if count < MIN_GROUPS:
        return GroupInterval(count, None)
    effect = design_effect(influence, groups)
    return GroupInterval(count, widened_about(estimate, interval, effect, count, level), effect)


def group_balanced_accuracy_interval(correct: np.ndarray, trials: np.ndarray, labels: np.ndarray,
                                     groups: Sequence[str], interval: Sequence[float]) -> GroupInterval:
    """Balanced accuracy's tile-level 95% CI `interval` (class_intervals.balanced_accuracy_interval's of the same
    arguments) widened for the tiles' `groups`."""
    estimate, influence = balanced_accuracy_influence(correct, trials, labels)
    return widened_interval(estimate, interval, groups, influence)


def group_macro_auc_interval(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                             tiles: Sequence[np.ndarray], groups: Sequence[str], interval: Sequence[float]
                             ) -> GroupInterval | None:
    """Macro AUC's tile-level 95% CI `interval` (auc_intervals.macro_auc_interval's of the same runs) widened for
    the `groups` of the tiles (by position); None where a run has no AUC."""
    found = macro_auc_influence(probabilities, labels, tiles, len(groups))
    if found is None:
        return None
    estimate, influence = found
    return widened_interval(estimate, interval, groups, influence)


def balanced_accuracy_influence(correct: np.ndarray, trials: np.ndarray, labels: np.ndarray
                                ) -> tuple[float, np.ndarray]:
    """(balanced accuracy, each tile's influence on it) from `correct[i]` right of `trials[i]` predictions on tile
    i of class `labels[i]` (seeds pooled, as balanced_accuracy_interval's arguments)."""
    share = np.asarray(correct, np.float64).reshape(-1) / np.asarray(trials, np.float64).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    tiles = np.bincount(labels).astype(np.float64)
    present = tiles > 0
    recall = np.divide(np.bincount(labels, weights=share), tiles, out=np.zeros_like(tiles), where=present)
    influence = (share - recall[labels]) / (tiles[labels] * present.sum())
    return float(recall[present].mean()), influence


def group_class_auc_intervals(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                              tiles: Sequence[np.ndarray], groups: Sequence[str], level: float = CI_LEVEL
                              ) -> list[GroupInterval]:
    """Each class's one-vs-rest AUC 95% CI over the `groups` of the tiles (by position) that runs scored `tiles[r]`
    of with `probabilities[r]`, their true classes `labels[r]` (as macro_auc_interval's arguments): its score
    interval over the distinct tiles with the design effect of its influences; no interval where a class has no
    AUC."""
    groups = np.asarray(groups).reshape(-1)
    count = len(set(groups.tolist()))
    truth = tile_labels(labels, tiles, len(groups))
    scored = truth >= 0
    found = []
    for c, values in enumerate(class_auc_influences(probabilities, labels, tiles, len(groups))):
        if values is None or count < MIN_GROUPS:
            found.append(GroupInterval(count, None))
            continue
        auc, influence = values
        effect = design_effect(influence[scored], groups[scored])
        positives = int(np.sum(truth[scored] == c))
        interval = auc_interval(auc, positives, int(scored.sum()) - positives, level, design_effect=effect,
                                groups=count)
        found.append(GroupInterval(count, interval, effect))
    return found


def group_design_fields(predictions: dict[str, Any], groups: Sequence[str] | None,
                        balanced_accuracy_ci: Sequence[float] | None, macro_auc_ci: Sequence[float] | None
                        ) -> dict[str, Any]:
    """{"balanced_accuracy_ci_groups", "macro_auc_ci_groups"}: [low, high] of one run's per-tile `predictions`
    (`labels`, `predictions`, `probabilities`, as split_metrics records) over the tiles' `groups`, from the
    tile-level CIs given; None without groups, tile-level CI or class probabilities, or from fewer than MIN_GROUPS
    groups."""
    fields: dict[str, Any] = {"balanced_accuracy_ci_groups": None, "macro_auc_ci_groups": None}
    if groups is None:
        return fields
    labels = np.asarray(predictions["labels"], np.int64)
    correct = (np.asarray(predictions["predictions"], np.int64) == labels).astype(np.float64)
    if balanced_accuracy_ci is not None:
        found = group_balanced_accuracy_interval(correct, np.ones_like(correct), labels, groups, balanced_accuracy_ci)
        fields["balanced_accuracy_ci_groups"] = found.interval and list(found.interval)
    if macro_auc_ci is not None and predictions.get("probabilities"):
        found = group_macro_auc_interval([np.asarray(predictions["probabilities"], np.float64)], [labels],
                                         [np.arange(len(labels))], groups, macro_auc_ci)
        fields["macro_auc_ci_groups"] = found and found.interval and list(found.interval)
    return fields
