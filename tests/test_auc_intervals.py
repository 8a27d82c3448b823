"""Confidence intervals of one-vs-rest AUCs: each class's score interval and macro AUC's MOVER interval."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from flaxbench import metrics
from flaxbench.auc_intervals import auc_interval, class_auc_cis, macro_auc_interval


def _binormal_scores(rng: np.random.Generator, positives: int, negatives: int, shift: float) -> tuple:
    """(labels, probabilities of two classes) whose class-0 score is normal, `shift` higher for class 0's tiles."""
    labels = np.array([0] * positives + [1] * negatives)
    score = rng.normal(size=positives + negatives) + shift * (labels == 0)
    first = 1 / (1 + np.exp(-score))
    return labels, np.stack([first, 1 - first], axis=1)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_auc_intervals_cover_the_true_auc_about_as_often_as_they_claim(shift):
    # Binormal scores of unit variance: the true AUC is Phi(shift / sqrt 2), 0.76 and 0.98; at 0.98 many of
    # 15 + 45 tiles are told apart perfectly, where a percentile bootstrap gives [1, 1].
    rng = np.random.default_rng(1)
    true_auc = NormalDist().cdf(shift / np.sqrt(2))
    covered, perfect = [], 0
    for _ in range(600):
        labels, probabilities = _binormal_scores(rng, 15, 45, shift)
        auc = metrics.one_vs_rest_auc(probabilities, labels)[0]
        low, high = auc_interval(auc, 15, 45)
        covered.append(low <= true_auc <= high)
        perfect += auc == 1.0
    assert 0.92 <= np.mean(covered) <= 0.99
    assert shift == 1.0 or perfect > 30


def test_auc_interval_hand_cases():
    low, high = auc_interval(1.0, 20, 20)
    assert high == 1.0 and 0.85 < low < 0.95  # every pair told apart: not [1, 1]
    low, high = auc_interval(0.5, 20, 20)
    assert low == pytest.approx(1 - high) and 0.3 < low < 0.4  # symmetric about 0.5
    assert auc_interval(0.0, 5, 5)[0] == 0.0
    few, many = auc_interval(0.8, 10, 10), auc_interval(0.8, 100, 100)
    assert few[0] < many[0] < 0.8 < many[1] < few[1]
    # Over 8 slides with a design effect of 3: wider than over tiles, by more than sqrt(3)
    tiles, slides = auc_interval(0.8, 100, 100), auc_interval(0.8, 100, 100, design_effect=3.0, groups=8)
    assert slides[1] - slides[0] > np.sqrt(3) * (tiles[1] - tiles[0])
    for bad in ((1.2, 5, 5), (0.5, 0, 5)):
        with pytest.raises(ValueError, match="AUC in"):
            auc_interval(*bad)


def test_class_auc_cis_count_each_classes_tiles_against_the_rest():
    labels = np.array([0] * 10 + [1] * 30 + [2] * 20)
    cis = class_auc_cis([0.9, None, 1.0], labels)
    np.testing.assert_allclose(cis[0], auc_interval(0.9, 10, 50))
    np.testing.assert_allclose(cis[2], auc_interval(1.0, 20, 40))
    assert np.isnan(cis[1]).all()
    assert np.isnan(class_auc_cis([0.7, 0.7], np.zeros(5, int))).all()  # no negatives: no AUC



def _scored(rng: np.random.Generator, tiles: int, classes: int, signal: float) -> tuple:
    """(labels, class probabilities) of a classifier whose logit of the true class is `signal` higher."""
    labels = rng.integers(0, classes, tiles)
    logits = rng.normal(size=(tiles, classes))
    logits[np.arange(tiles), labels] += signal
    return labels, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_macro_auc_interval_holds_the_estimate_and_the_mean_of_runs_sharing_tiles():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, 200)
    runs = [rng.dirichlet(np.ones(4), 200) + strength * np.eye(4)[labels] for strength in (0.3, 0.6)]
    estimates = [metrics.macro_auc(metrics.one_vs_rest_auc(p, labels)) for p in runs]
    low, high = macro_auc_interval([runs[0]], [labels])
    assert low < estimates[0] < high < 1.0
    tiles = np.arange(200)
    both = macro_auc_interval(runs, [labels, labels], [tiles, tiles])
    assert both[0] < np.mean(estimates) < both[1] and both != (low, high)
    assert macro_auc_interval([runs[0]] * 3, [labels] * 3, [tiles] * 3) == pytest.approx((low, high))
    folds = macro_auc_interval([runs[0][:100], runs[0][100:]], [labels[:100], labels[100:]],
                               [tiles[:100], tiles[100:]])  # two folds: each run its own tiles
    assert folds[0] < np.mean([metrics.macro_auc(metrics.one_vs_rest_auc(runs[0][s], labels[s]))
                               for s in (slice(0, 100), slice(100, 200))]) < folds[1]
    with pytest.raises(ValueError, match="equal, nonzero"):
        macro_auc_interval([runs[0]], [labels[:10]])
    assert macro_auc_interval([runs[0][:3]], [np.zeros(3, int)]) is None  # no negatives: no class has an AUC


def test_two_classes_macro_auc_interval_averages_their_intervals_bounds():
    # With two classes, class 1's AUC is class 0's (one ranking): perfectly correlated, they average out nothing,
    # so the macro interval's bounds are the means of the classes' bounds (which differ: their sizes swap).
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    first = np.clip(0.3 + 0.4 * (labels == 0) + rng.normal(0, 0.25, 200), 0, 1)
    probabilities = np.stack([first, 1 - first], axis=1)
    auc = metrics.one_vs_rest_auc(probabilities, labels)[0]
    positives = int(np.sum(labels == 0))
    each = np.array([auc_interval(auc, positives, 200 - positives), auc_interval(auc, 200 - positives, positives)])
    assert macro_auc_interval([probabilities], [labels]) == pytest.approx(tuple(each.mean(axis=0)))


def test_macro_auc_intervals_cover_a_near_perfect_classifiers_auc():
    # Six classes, 120 tiles: a true macro AUC of 0.996, where most samples rank nearly every pair right; a percentile
    # bootstrap over tiles covered it in 88% of 1,000 such samples (benchmarks/ci_coverage.py), and gives [1, 1] where
    # all are right.
    rng = np.random.default_rng(5)
    big_labels, big_probabilities = _scored(rng, 40000, 6, 3.0)
    true_auc = metrics.macro_auc(metrics.one_vs_rest_auc(big_probabilities, big_labels))
    covered = []
    for _ in range(200):
        labels, probabilities = _scored(rng, 120, 6, 3.0)
        low, high = macro_auc_interval([probabilities], [labels])
        covered.append(low <= true_auc <= high)
    assert 0.92 <= np.mean(covered) <= 0.99
    labels = np.repeat(np.arange(6), 5)
    low, high = macro_auc_interval([np.eye(6)[labels]], [labels])
    assert high == 1.0 and 0.8 < low < 1.0  # every pair told apart: not [1, 1]
