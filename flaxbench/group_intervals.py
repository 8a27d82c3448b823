"""The 95% CI of test accuracy over patients or slides, where their tiles are not independent.

Tiles cut from one slide look alike and tend to be right or wrong together, so the Wilson interval,
which counts every tile as an independent trial, is too narrow when the test tiles come from few
patients. A run split by `spec.data.group_by`, or whose tile ids name their slides by a known
convention (data_pipeline.shared_groups), knows each test tile's group, and the survey
statisticians' remedy for clustered proportions applies: the design effect (the variance of the
accuracy over groups, as a ratio estimator, against the binomial variance of as many independent
tiles; at least 1) turns the tiles into an effective number of independent ones, which Korn and
Graubard's correction shrinks further for the few degrees of freedom of few groups (by (z / t)^2,
t of groups - 1 degrees of freedom); the Wilson interval of that many tiles is the interval. It is
never narrower than the tile-level one, and like it does not shrink to nothing when every tile is
right. One group gives none: its spread over groups cannot be seen. A class's recall, precision and
specificity are proportions of tiles too, and get theirs over the groups holding the tiles they
count, as does its F1 through the proportion J it is a function of (class_intervals says how). Two
classifiers scored on the same tiles are compared with their paired difference per tile summed by
group: a t test over the groups, and the tile-level interval of the difference widened as the
design effect and the groups' degrees of freedom say.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist
from typing import Any, NamedTuple

import numpy as np
from scipy.stats import t as student_t

from data_pipeline.errors import DataError
from data_pipeline.groups import tile_groups
from flaxbench.class_intervals import CI_LEVEL, f1_from_jaccard, paired_difference_interval, wilson_interval

MIN_GROUPS = 2


def group_pattern(group_by: str | None, shared_groups: Any) -> str | None:
    """The pattern naming a run's tiles' patients or slides: its spec.data.group_by, else the known naming convention
    its tile ids follow (a `shared_groups` record, data_pipeline.shared_groups), as for Kather 2016 tiles split tile
    by tile; None for neither."""
    if group_by:
        return group_by
    return shared_groups.get("pattern") if isinstance(shared_groups, dict) else None


def recorded_groups(ids: Sequence[str], group_by: str | None) -> list[str] | None:
    """The group of each tile id by a recorded `group_by` pattern; None without one, or where a tile has no group by
    it (ids recorded otherwise than the split saw them)."""
    if not group_by:
        return None
    try:
        return tile_groups(ids, group_by)
    except DataError:
        return None


def _numbered_groups(groups: Sequence[str], *sizes: int) -> tuple[np.ndarray, int]:
    """(each tile's group number, how many groups); ValueError unless there is a group per tile of every array."""
    _, of_group = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)
    if not of_group.size or any(size != of_group.size for size in sizes):
        raise ValueError(f"need a group per tile and one value of each kind per tile, got {of_group.size} groups and "
                         f"values of {', '.join(map(str, sizes))} tiles")
    return of_group, int(of_group.max()) + 1


def _variance_over_groups(right: np.ndarray, counted: np.ndarray, of_group: np.ndarray, count: int) -> float:
    """The variance of the ratio sum(right) / sum(counted) of per-tile values with whole groups as the units (a ratio
    estimator's; `of_group` numbers the `count` groups)."""
    ratio = float(right.sum() / counted.sum())
    deviation = np.bincount(of_group, weights=right - ratio * counted, minlength=count)
    return count / (count - 1) * float(np.sum(deviation ** 2)) / float(counted.sum()) ** 2


class GroupInterval(NamedTuple):
    """The accuracy's 95% CI over the groups of the tiles scored, and the design effect behind it; both None with
    fewer than MIN_GROUPS groups."""

    groups: int
    interval: tuple[float, float] | None
    design_effect: float | None = None


def group_accuracy_interval(correct: np.ndarray, trials: np.ndarray | None, groups: Sequence[str],
                            level: float = CI_LEVEL) -> GroupInterval:
    """The 95% CI of accuracy from `correct[i]` right of `trials[i]` (default 1) predictions on tile i of group
    `groups[i]`, its tiles' outcomes alike within a group (the module's docstring says how)."""
    correct = np.asarray(correct, np.float64).reshape(-1)
    trials = np.ones_like(correct) if trials is None else np.asarray(trials, np.float64).reshape(-1)
    of_group, _ = _numbered_groups(groups, correct.size, trials.size)
    # of each tile's predictions, the right ones (several seeds pooled); every tile is one trial
    return _proportion_interval(correct / trials, np.ones_like(correct), of_group, level)


def _proportion_interval(right: np.ndarray, counted: np.ndarray, of_group: np.ndarray, level: float
                         ) -> GroupInterval:
    """The 95% CI over groups of the proportion sum(right) / sum(counted), tile i counting as `counted[i]` tiles (1,
    or the share of its seeds' predictions a proportion is over) of which `right[i]` were right; groups without a
    counted tile are left out."""
    kept = counted > 0
    used = np.unique(of_group[kept])
    if used.size < MIN_GROUPS:
        return GroupInterval(int(used.size), None)
    of_group = np.searchsorted(used, of_group[kept])
    right, counted = right[kept], counted[kept]
    tiles = float(counted.sum())
    proportion = float(right.sum()) / tiles
    variance = _variance_over_groups(right, counted, of_group, used.size)
    binomial = proportion * (1 - proportion) / tiles
    design_effect = max(1.0, variance / binomial) if binomial > 0 else 1.0
    quantile = 0.5 + level / 2
    effective = tiles / design_effect * (NormalDist().inv_cdf(quantile) / student_t.ppf(quantile, used.size - 1)) ** 2
    low, high = wilson_interval(proportion, effective, level)
    return GroupInterval(int(used.size), (float(low), float(high)), design_effect)


# Per-class values given a Wilson 95% CI over groups, as `<key>_ci_groups` (their groups: `<key>_groups`); AUC's
# comes from flaxbench.group_design_effects.
CLASS_GROUP_KEYS = ("recall", "precision", "specificity", "f1")


def group_class_intervals(correct: np.ndarray, trials: np.ndarray, labels: np.ndarray, predicted: np.ndarray,
                          groups: Sequence[str], level: float = CI_LEVEL) -> dict[str, list[GroupInterval]]:
    """{"recall", "precision", "specificity", "f1": a GroupInterval per class} over the tiles' groups, from per-tile
    pooled predictions (arguments as class_intervals.class_cis', and each tile's group): a class's recall over the
    groups holding its tiles, its specificity over those holding others, its precision over those holding tiles
    predicted as it (a tile counting as the share of its seeds that predicted it), its F1 over those holding
    either."""
    correct, trials = np.asarray(correct, np.float64), np.asarray(trials, np.float64)
    labels, predicted = np.asarray(labels, np.int64), np.asarray(predicted, np.float64)
    of_group, _ = _numbered_groups(groups, correct.size, trials.size, labels.size, len(predicted))
    found: dict[str, list[GroupInterval]] = {key: [] for key in CLASS_GROUP_KEYS}
    for k in range(predicted.shape[1]):
        member = (labels == k).astype(np.float64)
        said = predicted[:, k] / trials  # share of the tile's predictions that were class k
        for key, right, counted in (("recall", correct / trials * member, member),
                                    ("precision", said * member, said),
                                    ("specificity", (1 - said) * (1 - member), 1 - member),
                                    ("f1", said * member, np.maximum(member, said))):
            found[key].append(_proportion_interval(right, counted, of_group, level))
    found["f1"] = [interval if interval.interval is None else
                   interval._replace(interval=tuple(float(x) for x in f1_from_jaccard(interval.interval)))
                   for interval in found["f1"]]
    return found


def with_class_group_intervals(per_class: dict[str, dict[str, Any]], classes: Sequence[str],
                               found: dict[str, list[GroupInterval]] | None) -> dict[str, dict[str, Any]]:
    """`per_class` ({class: {key: value}}) with `<key>_ci_groups` ([low, high] or None) and `<key>_groups` (how many)
    of each key of `found` ({key: a GroupInterval per class in `classes` order}, as group_class_intervals gives);
    `per_class` itself where `found` is None."""
    if found is None:
        return per_class
    table = {name: dict(values) for name, values in per_class.items()}
    for k, name in enumerate(classes):
        for key, intervals in found.items():
            interval = intervals[k]
            table[name][f"{key}_ci_groups"] = None if interval.interval is None else list(interval.interval)
            table[name][f"{key}_groups"] = interval.groups
    return table


class GroupComparison(NamedTuple):
    """Accuracy of one classifier minus another's on the same tiles, with its 95% CI and two-sided p-value over
    the tiles' groups; both None with fewer than MIN_GROUPS groups."""

    groups: int
    difference: float
    interval: tuple[float, float] | None
    p_value: float | None


def group_paired_comparison(right_a: np.ndarray, right_b: np.ndarray, groups: Sequence[str],
                            level: float = CI_LEVEL) -> GroupComparison:
    """Accuracy of A minus B from their outcomes `right_a[i]`, `right_b[i]` on tile i of group `groups[i]` (1 right, 0
    wrong, or the share of a row's seeds right), with the groups as the units: the difference's variance a ratio
    estimator's over the groups (at least that of independent tiles), its two-sided p-value from a t distribution of
    groups - 1 degrees of freedom, and its CI the tile-level one (class_intervals.paired_difference_interval) widened
    about it by sqrt(design effect) * t / z."""
    a, b = (np.asarray(x, np.float64).reshape(-1) for x in (right_a, right_b))
    of_group, count = _numbered_groups(groups, a.size, b.size)
    paired = a - b
    mean, tiles = float(paired.mean()), paired.size
    if count < MIN_GROUPS:
        return GroupComparison(count, mean, None, None)
    variance = _variance_over_groups(paired, np.ones_like(paired), of_group, count)
    independent = float(paired.var(ddof=1)) / tiles if tiles > 1 else 0.0
    error = float(np.sqrt(max(variance, independent)))
    if error > 0:
        p_value = float(2 * student_t.sf(abs(mean) / error, count - 1))
    else:  # every tile differs alike: no difference at all, or the same one on every tile
        p_value = 1.0 if mean == 0 else 0.0
    design_effect = max(1.0, variance / independent) if independent > 0 else 1.0
    tile_interval = paired_difference_interval(a, b, level)
    return GroupComparison(count, mean, widened_about(mean, tile_interval, design_effect, count, level, (-1.0, 1.0)),
                           p_value)


def widened_about(estimate: float, interval: Sequence[float], design_effect: float, groups: int,
                  level: float = CI_LEVEL, bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:
    """A tile-level `interval` of `estimate` widened about it by sqrt(design effect) * t / z, t of `groups` - 1
    degrees of freedom, within `bounds`."""
    quantile = 0.5 + level / 2
    factor = np.sqrt(design_effect) * float(student_t.ppf(quantile, groups - 1)) / NormalDist().inv_cdf(quantile)
    low, high = (float(x) for x in interval)
    return (float(max(bounds[0], estimate - factor * max(0.0, estimate - low))),
            float(min(bounds[1], estimate + factor * max(0.0, high - estimate))))


def tile_group_interval(correct: np.ndarray, trials: np.ndarray | None, ids: Sequence[str],
                        group_by: str | None) -> GroupInterval | None:
    """group_accuracy_interval of tiles `ids` grouped by the run's `group_by` pattern; None where recorded_groups
    finds none."""
    groups = recorded_groups(ids, group_by)
    return None if groups is None else group_accuracy_interval(correct, trials, groups)


def predictions_group_interval(predictions: dict[str, Any], group_by: str | None) -> GroupInterval | None:
    """tile_group_interval of per-tile `predictions` (`ids`, `labels`, `predictions`, as split_metrics records)."""
    correct = np.asarray(predictions["labels"]) == np.asarray(predictions["predictions"])
    return tile_group_interval(correct, None, predictions["ids"], group_by)


def group_fields(found: GroupInterval | None) -> dict[str, Any]:
    """{"groups": how many, "accuracy_ci_groups": [low, high], "design_effect_groups"}, as an evaluation records
    them (None where not found)."""
    interval = None if found is None or found.interval is None else list(found.interval)
    return {"groups": None if found is None else found.groups, "accuracy_ci_groups": interval,
            "design_effect_groups": None if found is None else found.design_effect}


def format_group_interval(found: GroupInterval | None) -> str:
    """'; 81.2-95.0% over 24 groups' for a metrics line after its tile-level CI; '' without groups."""
    if found is None:
        return ""
    if found.interval is None:
        return f"; {found.groups} group{'s' if found.groups > 1 else ''}, too few for a CI over groups (at least " \
               f"{MIN_GROUPS})"
    low, high = found.interval
    return f"; {100 * low:.1f}-{100 * high:.1f}% over {found.groups} groups"
