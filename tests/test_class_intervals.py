"""Confidence intervals of accuracy, balanced accuracy and each class's values: Wilson intervals of the proportions
and of F1's Jaccard index, combined by MOVER for balanced accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from flaxbench import metrics
from flaxbench.class_intervals import (
    accuracy_interval, balanced_accuracy_interval, class_cis, f1_from_jaccard, mover_interval,
    paired_difference_interval, wilson_interval,
)
from tests.helpers import pooled_predictions


def test_wilson_interval_matches_hand_computed_values():
    # 8 of 10: the textbook (0.490, 0.943); 10 of 10 does not collapse to [1, 1]; 0 of 5 starts at 0
    np.testing.assert_allclose(wilson_interval(0.8, 10), [0.4902, 0.9433], atol=1e-4)
    np.testing.assert_allclose(wilson_interval(1.0, 100), [0.9630, 1.0], atol=1e-4)
    np.testing.assert_allclose(wilson_interval(0.0, 5), [0.0, 0.4345], atol=1e-4)
    assert np.isnan(wilson_interval(0.5, 0)).all()
    narrow, wide = wilson_interval(0.7, 50, level=0.5), wilson_interval(0.7, 50, level=0.99)
    assert wide[0] < narrow[0] < 0.7 < narrow[1] < wide[1]
    with pytest.raises(ValueError, match="level"):
        wilson_interval(0.5, 10, level=1.0)


def test_accuracy_interval_is_wilsons_over_tiles_with_seedspooled_predictions():
    right = np.array([1] * 80 + [0] * 20)
    np.testing.assert_allclose(accuracy_interval(right), wilson_interval(0.8, 100))
    # Every tile right: 100 of 100 is not [1, 1] (a percentile bootstrap's answer)
    assert accuracy_interval(np.ones(100)) == pytest.approx((0.9630, 1.0), abs=1e-4)
    # Three seeds agreeing on every tile are one seed; disagreeing ones pool their predictions over as many tiles.
    np.testing.assert_allclose(accuracy_interval(3 * right, np.full(100, 3)), accuracy_interval(right))
    np.testing.assert_allclose(accuracy_interval(np.array([3] * 70 + [1] * 30), np.full(100, 3)),
                               wilson_interval(0.8, 100))
    assert accuracy_interval(right, level=0.5)[0] > accuracy_interval(right, level=0.99)[0]
    for correct, trials in ((np.array([]), None), (np.ones(3), np.ones(2)), (np.array([2.0]), np.array([1.0]))):
        with pytest.raises(ValueError, match="per tile|0 <= correct"):
            accuracy_interval(correct, trials)


def test_class_intervals_are_wilsons_over_each_classes_tiles():
    labels = np.array([0] * 10 + [1] * 20)
    predicted = np.array([0] * 8 + [1] * 2 + [1] * 15 + [0] * 5)  # class 0: 8 of 10 right; 5 of class 1 called 0
    cis = class_cis(*pooled_predictions(labels, [predicted], 2))
    np.testing.assert_allclose(cis["recall"][0], wilson_interval(0.8, 10))
    np.testing.assert_allclose(cis["recall"][1], wilson_interval(0.75, 20))
    np.testing.assert_allclose(cis["precision"][0], wilson_interval(8 / 13, 13))  # 13 tiles called 0
    np.testing.assert_allclose(cis["specificity"][0], wilson_interval(15 / 20, 20))
    values = metrics.per_class_metrics(metrics.confusion_matrix(labels, predicted, 2), ["a", "b"])
    for key in ("recall", "precision", "specificity"):
        for k, name in enumerate("ab"):
            assert cis[key][k][0] < values[name][key] < cis[key][k][1]


def test_seeds_pool_their_predictions_but_count_tiles_once():
    labels = np.array([0] * 10 + [1] * 10)
    right = labels.copy()
    wrong = right.copy()
    wrong[:4] = 1  # the second seed misses four tiles of class 0
    cis = class_cis(*pooled_predictions(labels, [right, wrong], 2))
    np.testing.assert_allclose(cis["recall"][0], wilson_interval(16 / 20, 10))  # pooled 80%, over 10 tiles
    # class 1 called 10 times by one seed, 14 by the other (20 of them right): 12 tiles a seed on average
    np.testing.assert_allclose(cis["precision"][1], wilson_interval(20 / 24, 12))
    agree = class_cis(*pooled_predictions(labels, [wrong] * 3, 2))
    alone = class_cis(*pooled_predictions(labels, [wrong], 2))
    for key in agree:
        np.testing.assert_allclose(agree[key], alone[key])


def test_a_class_never_predicted_has_no_precision_interval():
    labels, predicted = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 1, 1, 0, 1])
    cis = class_cis(*pooled_predictions(labels, [predicted], 3))
    assert np.isnan(cis["precision"][2]).all() and cis["recall"][2][0] == 0.0 and cis["recall"][2][1] > 0.5
    assert set(cis) == {"recall", "precision", "specificity", "f1"}
    # Class 2's F1 is 0 but not known to be: 0 of its 2 tiles found, so its interval reaches above 0.
    assert cis["f1"][2][0] == 0.0 and cis["f1"][2][1] > 0.5
    never = class_cis(*pooled_predictions(np.array([0, 1]), [np.array([0, 1])], 3))
    assert np.isnan(never["f1"][2]).all()  # no tile of class 2 and none called it: F1 undefined
    with pytest.raises(ValueError, match="add up to its trials"):
        class_cis(np.array([1]), np.array([2]), np.array([0]), np.array([[1, 0]]))


def test_f1_interval_is_wilsons_of_its_jaccard_index():
    labels = np.array([0] * 10 + [1] * 20)
    predicted = np.array([0] * 8 + [1] * 2 + [1] * 15 + [0] * 5)  # class 0: TP 8, FN 2, FP 5
    cis = class_cis(*pooled_predictions(labels, [predicted], 2))
    np.testing.assert_allclose(cis["f1"][0], f1_from_jaccard(wilson_interval(8 / 15, 15)))
    f1 = metrics.per_class_metrics(metrics.confusion_matrix(labels, predicted, 2), ["a", "b"])["a"]["f1"]
    assert f1 == pytest.approx(float(f1_from_jaccard(8 / 15))) and cis["f1"][0][0] < f1 < cis["f1"][0][1]
    # Every tile of both classes right: F1 is 1 and its interval is not [1, 1] (a percentile bootstrap's answer).
    perfect = class_cis(*pooled_predictions(labels, [labels], 2))["f1"]
    np.testing.assert_allclose(perfect[:, 1], 1.0)
    assert np.all(perfect[:, 0] < 1.0)
    np.testing.assert_allclose(perfect[0], f1_from_jaccard(wilson_interval(1.0, 10)))


def test_f1_intervals_cover_the_true_f1_about_as_often_as_they_claim():
    # Tiles of class 0 with probability 0.3, found with probability 0.8; others called 0 with probability 0.1.
    rng = np.random.default_rng(0)
    true_positive, false_negative, false_positive = 0.3 * 0.8, 0.3 * 0.2, 0.7 * 0.1
    true_f1 = 2 * true_positive / (2 * true_positive + false_negative + false_positive)
    covered = []
    for _ in range(1000):
        labels = (rng.random(60) > 0.3).astype(int)
        called_zero = np.where(labels == 0, rng.random(60) < 0.8, rng.random(60) < 0.1)
        low, high = class_cis(*pooled_predictions(labels, [np.where(called_zero, 0, 1)], 2))["f1"][0]
        covered.append(low <= true_f1 <= high)
    assert 0.92 <= np.mean(covered) <= 0.98


def test_balanced_accuracy_interval_combines_the_recalls_wilson_intervals():
    # Class 0: 90 tiles, all right; class 1: 10 tiles, none right. Balanced accuracy is 0.5 in every resample
    # holding both classes, so a percentile bootstrap gives [0.5, 0.5]; each recall is uncertain, so this is not.
    labels = np.array([0] * 90 + [1] * 10)
    low, high = balanced_accuracy_interval((labels == 0).astype(float), np.ones(100), labels)
    first, second = wilson_interval(1.0, 90), wilson_interval(0.0, 10)
    assert low == pytest.approx(0.5 - (1 - first[0]) / 2) and high == pytest.approx(0.5 + second[1] / 2)
    # Every tile right: not [1, 1]; agreeing seeds are one seed; one class is its recall's Wilson interval
    perfect = balanced_accuracy_interval(np.ones(100), np.ones(100), labels)
    assert perfect[1] == 1.0 and perfect[0] < 1.0
    assert balanced_accuracy_interval(np.full(100, 3.0), np.full(100, 3.0), labels) == pytest.approx(perfect)
    right = np.r_[np.ones(70), np.zeros(30)]
    np.testing.assert_allclose(balanced_accuracy_interval(right, np.ones(100), np.zeros(100, int)),
                               wilson_interval(0.7, 100))
    with pytest.raises(ValueError, match="at least one tile"):
        balanced_accuracy_interval(np.array([]), np.array([]), np.array([], int))


def test_balanced_accuracy_intervals_cover_its_true_value_about_as_often_as_they_claim():
    rng = np.random.default_rng(3)
    recalls = np.array([0.9, 0.6, 0.75])
    labels = np.repeat(np.arange(3), 20)
    covered = [(lambda ci: ci[0] <= recalls.mean() <= ci[1])(balanced_accuracy_interval(
        (rng.random(60) < recalls[labels]).astype(float), np.ones(60), labels)) for _ in range(1000)]
    assert 0.92 <= np.mean(covered) <= 0.98


def test_mover_combines_independent_or_correlated_intervals_of_a_mean():
    estimates, intervals = np.array([0.6, 0.8]), np.array([[0.5, 0.7], [0.7, 0.9]])
    independent = mover_interval(estimates, intervals)
    assert independent == pytest.approx((0.7 - np.sqrt(0.02) / 2, 0.7 + np.sqrt(0.02) / 2))
    together = mover_interval(estimates, intervals, np.ones((2, 2)))  # perfectly correlated: no averaging out
    assert together == pytest.approx((0.6, 0.8))
    assert mover_interval(np.array([1.0, 1.0]), np.array([[0.9, 1.0], [0.8, 1.0]])) == pytest.approx(
        (1 - np.sqrt(0.05) / 2, 1.0))


def test_paired_difference_interval_holds_the_difference_and_counts_the_pairing():
    rng = np.random.default_rng(6)
    b = rng.random(200) < 0.8
    a = b.copy()
    a[np.flatnonzero(~b)[:10]] = True  # A right on 10 tiles B misses, alike elsewhere: 85% against 80%
    low, high = paired_difference_interval(a, b)
    assert 0.0 < low < 0.05 < high < 0.1  # only 10 discordant tiles, all A's: the difference is clearly > 0
    unpaired = paired_difference_interval(a, rng.permutation(b))  # same accuracies, outcomes no longer aligned
    assert unpaired[1] - unpaired[0] > 2 * (high - low) and unpaired[0] < 0.0
    same = paired_difference_interval(b, b)  # identical outcomes: about 0, yet not [0, 0]
    assert same[0] < 0.0 < same[1] < 0.05
    assert paired_difference_interval(np.ones(50, bool), np.ones(50, bool)) == pytest.approx(
        (wilson_interval(1.0, 50)[0] - 1, 1 - wilson_interval(1.0, 50)[0]))
    with pytest.raises(ValueError, match="paired outcomes of equal"):
        paired_difference_interval(a, b[:10])


def test_paired_difference_interval_of_seed_shares_is_that_of_their_averaged_table():
    # two seeds of A half right on every tile, B's two seeds alike: right on tiles 0-1, wrong on 2-3. Averaged over
    # the four pairings of seeds, 1 tile is right for both, 1 for A alone, 1 for B alone, 1 for neither
    shares_a, shares_b = np.full(4, 0.5), np.array([1.0, 1.0, 0.0, 0.0])
    same_table = np.array([True, True, False, False]), np.array([True, False, True, False])
    assert paired_difference_interval(shares_a, shares_b) == pytest.approx(paired_difference_interval(*same_table))
    rng = np.random.default_rng(3)  # and any shares: the CI holds the difference of the mean shares
    shares_a, shares_b = rng.integers(0, 4, 80) / 3, rng.integers(0, 3, 80) / 2
    low, high = paired_difference_interval(shares_a, shares_b)
    assert low < shares_a.mean() - shares_b.mean() < high


def test_paired_difference_interval_takes_no_correlation_where_method_10s_correction_leaves_none():
    # both right 2, A alone 3, B alone 2, neither 5: AD - BC = 4 is within n / 2 = 6, so phi is 0 and the
    # interval is the plain square-and-add of the two Wilson intervals
    a = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0], bool)
    b = np.array([1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0], bool)
    (low_a, high_a), (low_b, high_b) = wilson_interval(np.array([a.mean(), b.mean()]), a.size)
    difference = a.mean() - b.mean()
    assert paired_difference_interval(a, b) == pytest.approx((
        difference - np.hypot(a.mean() - low_a, high_b - b.mean()),
        difference + np.hypot(high_a - a.mean(), b.mean() - low_b)))


def test_paired_difference_intervals_cover_the_true_difference_about_as_often_as_they_claim():
    # A right on 90% of tiles, B on 85%, their outcomes correlated: both right 80%, A alone 10%, B alone 5%.
    rng = np.random.default_rng(7)
    covered = []
    for _ in range(1000):
        cell = rng.choice(4, size=100, p=[0.8, 0.1, 0.05, 0.05])
        low, high = paired_difference_interval(np.isin(cell, (0, 1)), np.isin(cell, (0, 2)))
        covered.append(low <= 0.05 <= high)
    assert 0.92 <= np.mean(covered) <= 0.98
