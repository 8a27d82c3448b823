"""95% CIs over patients or slides of balanced accuracy, macro AUC and each class's AUC, from design effects.

These are no proportions of tiles, so group_intervals' Wilson interval of an effective number of
tiles does not fit them. Their tile-level intervals (balanced accuracy's from its recalls' Wilson
intervals, macro AUC's percentile bootstrap) are widened instead by the same two factors. The first
is the square root of the design effect: the variance of the statistic with whole groups as the
units over its variance with independent tiles, both from its linearisation (each tile's influence
on it, summed per group; for AUC the structural components of DeLong et al. 1988, summed per cluster
as in Obuchowski 1997), at least 1. The second is t / z, t of groups - 1 degrees of freedom (Korn and
Graubard). A class's AUC gets its score interval (class_intervals.auc_interval) with its variance
times the design effect and t in place of z. A class whose tiles all come from one group adds to
neither variance's between-group part: how its recall varies over patients cannot be seen, as the
per-class intervals over groups say ('1 group').
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
from scipy.stats import t as student_t

from flaxbench.bootstrap import CI_LEVEL
from flaxbench.class_intervals import auc_interval
from flaxbench.group_intervals import MIN_GROUPS, GroupInterval


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
    quantile = 0.5 + level / 2
    factor = np.sqrt(effect) * float(student_t.ppf(quantile, count - 1)) / NormalDist().inv_cdf(quantile)
    low, high = (float(x) for x in interval)
    widened = (float(max(0.0, estimate - factor * max(0.0, estimate - low))),
               float(min(1.0, estimate + factor * max(0.0, high - estimate))))
    return GroupInterval(count, widened, effect)


def group_balanced_accuracy_interval(correct: np.ndarray, trials: np.ndarray, labels: np.ndarray,
                                     groups: Sequence[str], interval: Sequence[float]) -> GroupInterval:
    """Balanced accuracy's tile-level 95% CI `interval` (class_intervals.balanced_accuracy_interval's of the same
    arguments) widened for the tiles' `groups`."""
    estimate, influence = balanced_accuracy_influence(correct, trials, labels)
    return widened_interval(estimate, interval, groups, influence)


def group_macro_auc_interval(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                             tiles: Sequence[np.ndarray], groups: Sequence[str], interval: Sequence[float]
                             ) -> GroupInterval | None:
    """Macro AUC's tile-level 95% CI `interval` (bootstrap_macro_auc_ci's of the same runs) widened for the `groups` of
    the tiles (by position); None where a run has no AUC."""
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


def macro_auc_influence(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                        tiles: Sequence[np.ndarray], num_tiles: int) -> tuple[float, np.ndarray] | None:
    """(macro one-vs-rest AUC, mean over runs, each of the `num_tiles` tiles' influence on it) of runs that scored
    their tiles `tiles[r]` (positions) with `probabilities[r]`, their true classes `labels[r]` (as
    bootstrap_macro_auc_ci's arguments); None where a run has no class with both positives and negatives."""
    estimate, influence = 0.0, np.zeros(num_tiles)
    for scores, truth, places in zip(probabilities, labels, tiles):
        defined = [found for found in _class_aucs(scores, truth) if found is not None]
        if not defined:
            return None
        estimate += float(np.mean([auc for auc, _ in defined])) / len(probabilities)
        run_influence = np.sum([of_tiles for _, of_tiles in defined], axis=0)
        np.add.at(influence, np.asarray(places, np.int64), run_influence / (len(defined) * len(probabilities)))
    return estimate, influence


def class_auc_influences(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                         tiles: Sequence[np.ndarray], num_tiles: int) -> list[tuple[float, np.ndarray] | None]:
    """Per class, (its one-vs-rest AUC, the mean over the runs where it is defined, each tile's influence on it), as
    macro_auc_influence's arguments; None for a class no run has both positives and negatives of."""
    per_run = [(_class_aucs(scores, truth), np.asarray(places, np.int64))
               for scores, truth, places in zip(probabilities, labels, tiles)]
    found: list[tuple[float, np.ndarray] | None] = []
    for c in range(len(per_run[0][0])):
        defined = [(run[c], places) for run, places in per_run if run[c] is not None]
        if not defined:
            found.append(None)
            continue
        influence = np.zeros(num_tiles)
        for (_, of_tiles), places in defined:
            np.add.at(influence, places, of_tiles / len(defined))
        found.append((float(np.mean([auc for (auc, _), _ in defined])), influence))
    return found


def _class_aucs(scores: np.ndarray, truth: np.ndarray) -> list[tuple[float, np.ndarray] | None]:
    """Per class, (one run's one-vs-rest AUC, each of its tiles' influence on it: the structural components of
    DeLong et al. less the AUC, over the positives' or negatives' count); None without positives or negatives."""
    scores, truth = np.asarray(scores, np.float64), np.asarray(truth, np.int64).reshape(-1)
    found: list[tuple[float, np.ndarray] | None] = []
    for c in range(scores.shape[1]):
        positive = truth == c
        components = _structural_components(scores[positive, c], scores[~positive, c])
        if components is None:
            found.append(None)
            continue
        auc, of_positives, of_negatives = components
        influence = np.zeros(len(truth))
        influence[positive] = (of_positives - auc) / positive.sum()
        influence[~positive] = (of_negatives - auc) / (~positive).sum()
        found.append((auc, influence))
    return found


def _structural_components(positives: np.ndarray, negatives: np.ndarray
                           ) -> tuple[float, np.ndarray, np.ndarray] | None:
    """(AUC, each positive's share of negatives scored below it, each negative's share of positives scored above
    it; ties half) of one class against the rest; None without positives or negatives."""
    if not positives.size or not negatives.size:
        return None
    below, tied = _ranked(np.sort(negatives), positives)
    of_positives = (below + tied / 2) / negatives.size
    below, tied = _ranked(np.sort(positives), negatives)
    of_negatives = (positives.size - below - tied + tied / 2) / positives.size
    return float(of_positives.mean()), of_positives, of_negatives


def _ranked(ordered: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(how many of `ordered` lie below each score, how many equal it)."""
    below = np.searchsorted(ordered, scores, side="left")
    return below.astype(np.float64), (np.searchsorted(ordered, scores, side="right") - below).astype(np.float64)


def group_class_auc_intervals(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                              tiles: Sequence[np.ndarray], groups: Sequence[str], level: float = CI_LEVEL
                              ) -> list[GroupInterval]:
    """Each class's one-vs-rest AUC 95% CI over the `groups` of the tiles (by position) that runs scored `tiles[r]`
    of with `probabilities[r]`, their true classes `labels[r]` (as bootstrap_macro_auc_ci's arguments): its score
    interval over the distinct tiles with the design effect of its influences; no interval where a class has no
    AUC."""
    groups = np.asarray(groups).reshape(-1)
    count = len(set(groups.tolist()))
    truth = np.full(len(groups), -1)
    for places, labelled in zip(tiles, labels):
        truth[np.asarray(places, np.int64)] = np.asarray(labelled, np.int64)
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
