"""95% confidence intervals of one-vs-rest AUCs: each class's, and macro AUC's, over tiles.

A class's AUC gets a score interval, as Wilson's is for a proportion: the AUCs A whose distance from
the estimate is within z standard errors of A itself, the variance that of Hanley & McNeil (1982) at
A for the class's positive and negative tiles. It stays inside [0, 1] and does not collapse to [1, 1]
for a class told apart on every tile, as a percentile bootstrap does. (Newcombe 2006 sets both class
sizes to their mean; with one class against the rest, as here, that underestimates the variance: in
one simulation of 9 classes on 29 and on 60 tiles, the macro AUC's interval below then missed the
true value above it in 15% and 8% of test sets, against 11% and 7% with the class sizes themselves.)
Macro AUC, their mean, combines the classes' intervals by MOVER (Zou & Donner 2008) with the
correlations of their estimates: the classes' AUCs share tiles (a tile is a positive of one class
and a negative of the others), so their covariance comes from DeLong et al.'s (1988) structural
components, each tile's influence on each AUC. Those influences, summed per patient or slide, also
give the design effects of flaxbench.group_design_effects.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
from scipy.optimize import brentq
from scipy.stats import t as student_t

from flaxbench.class_intervals import mover_interval


def auc_interval(auc: float, positives: int, negatives: int, level: float = 0.95, *, design_effect: float = 1.0,
                 groups: int | None = None) -> tuple[float, float]:
    """The score interval of a one-vs-rest AUC estimated from `positives` and `negatives` tiles (the module's
    docstring says how); over `groups` patients or slides, its variance times their `design_effect` and t of
    groups - 1 degrees of freedom in place of z."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if positives < 1 or negatives < 1 or not 0.0 <= auc <= 1.0:
        raise ValueError(f"need an AUC in [0, 1] of at least one positive and one negative, got {auc} of "
                         f"{positives} and {negatives}")
    quantile = 0.5 + level / 2
    spread = NormalDist().inv_cdf(quantile) if groups is None else float(student_t.ppf(quantile, groups - 1))
    spread *= np.sqrt(max(1.0, design_effect))

    def outside(value: float) -> float:  # > 0 where `value` lies outside the interval
        variance = value * (1 - value) / (positives * negatives) * (
            1 + (positives - 1) * (1 - value) / (2 - value) + (negatives - 1) * value / (1 + value))
        return (auc - value) ** 2 - spread ** 2 * variance

    # At an AUC of 0 or 1 the variance there is 0, so the search starts just inside, where the estimate lies within.
    inner = min(max(auc, 1e-9), 1 - 1e-9)
    low = 0.0 if outside(0.0) <= 0 else brentq(outside, 0.0, inner, xtol=1e-12)
    high = 1.0 if outside(1.0) <= 0 else brentq(outside, inner, 1.0, xtol=1e-12)
    return float(low), float(high)


def class_auc_cis(aucs: np.ndarray, labels: np.ndarray, level: float = 0.95) -> np.ndarray:
    """(classes, 2): the score interval of each class's one-vs-rest AUC `aucs[c]` (NaN or None: none) on tiles of
    true classes `labels` (each tile once, however many seeds scored it)."""
    aucs = np.array([np.nan if a is None else a for a in aucs], np.float64)
    positives = np.bincount(np.asarray(labels, np.int64).reshape(-1), minlength=len(aucs))
    found = np.full((len(aucs), 2), np.nan)
    for c, (auc, count) in enumerate(zip(aucs, positives)):
        if not np.isnan(auc) and 0 < count < positives.sum():
            found[c] = auc_interval(float(auc), int(count), int(positives.sum() - count), level)
    return found


def macro_auc_interval(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                       tiles: Sequence[np.ndarray] | None = None, level: float = 0.95) -> tuple[float, float] | None:
    """The CI of macro AUC (the mean over classes of each class's AUC, itself the mean over the runs where it is
    defined) of runs that scored their tiles `tiles[r]` (positions; default: one run, every tile) with
    `probabilities[r]`, their true classes `labels[r]`: the classes' score intervals, over the distinct tiles,
    combined by MOVER with their estimates' correlations; None where no class has an AUC."""
    tiles = [np.arange(len(labels[0]))] if tiles is None else tiles
    if not (len(probabilities) == len(labels) == len(tiles) > 0) or any(
            np.ndim(p) != 2 or not len(p) == len(y) == len(t) > 0 for p, y, t in zip(probabilities, labels, tiles)):
        raise ValueError("need per run probabilities (n, classes), labels and tile positions of equal, nonzero length")
    num_tiles = int(max(np.max(t) for t in tiles)) + 1
    found = class_auc_influences(probabilities, labels, tiles, num_tiles)
    truth = tile_labels(labels, tiles, num_tiles)
    intervals = class_auc_cis([None if f is None else f[0] for f in found], truth[truth >= 0], level)
    defined = [c for c, f in enumerate(found) if f is not None and not np.isnan(intervals[c]).any()]
    if not defined:
        return None
    influences = np.stack([found[c][1] for c in defined])
    return mover_interval(np.array([found[c][0] for c in defined]), intervals[defined],
                          _correlations(influences @ influences.T))


def tile_labels(labels: Sequence[np.ndarray], tiles: Sequence[np.ndarray], num_tiles: int) -> np.ndarray:
    """The true class at each of `num_tiles` positions from runs' `labels[r]` of their tiles `tiles[r]` (-1 where no
    run scored one)."""
    truth = np.full(num_tiles, -1, np.int64)
    for places, labelled in zip(tiles, labels):
        truth[np.asarray(places, np.int64)] = np.asarray(labelled, np.int64)
    return truth


def _correlations(covariance: np.ndarray) -> np.ndarray:
    """The correlation matrix of a covariance matrix; 0 off the diagonal for an estimate without variance."""
    spread = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    scale = np.outer(spread, spread)
    correlation = np.divide(covariance, scale, out=np.zeros_like(covariance), where=scale > 0)
    np.fill_diagonal(correlation, 1.0)
    return correlation


def macro_auc_influence(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                        tiles: Sequence[np.ndarray], num_tiles: int) -> tuple[float, np.ndarray] | None:
    """(macro one-vs-rest AUC, mean over runs, each of the `num_tiles` tiles' influence on it) of runs that scored
    their tiles `tiles[r]` (positions) with `probabilities[r]`, their true classes `labels[r]` (as
    macro_auc_interval's arguments); None where a run has no class with both positives and negatives."""
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
