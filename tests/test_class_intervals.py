"""Confidence intervals of proportions: Wilson intervals of accuracy, recall, precision and specificity; F1's
bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from flaxbench import metrics
from flaxbench.class_intervals import accuracy_interval, class_cis, class_proportion_cis, wilson_interval
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
    cis = class_proportion_cis(*pooled_predictions(labels, [predicted], 2))
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
    cis = class_proportion_cis(*pooled_predictions(labels, [right, wrong], 2))
    np.testing.assert_allclose(cis["recall"][0], wilson_interval(16 / 20, 10))  # pooled 80%, over 10 tiles
    # class 1 called 10 times by one seed, 14 by the other (20 of them right): 12 tiles a seed on average
    np.testing.assert_allclose(cis["precision"][1], wilson_interval(20 / 24, 12))
    agree = class_cis(*pooled_predictions(labels, [wrong] * 3, 2), level=0.95, num_resamples=300, seed=0)
    alone = class_cis(*pooled_predictions(labels, [wrong], 2), level=0.95, num_resamples=300, seed=0)
    for key in agree:
        np.testing.assert_allclose(agree[key], alone[key])


def test_a_class_never_predicted_has_no_precision_interval():
    labels, predicted = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 1, 1, 0, 1])
    cis = class_cis(*pooled_predictions(labels, [predicted], 3), level=0.95, num_resamples=200, seed=0)
    assert np.isnan(cis["precision"][2]).all() and cis["recall"][2][0] == 0.0 and cis["recall"][2][1] > 0.5
    assert set(cis) == {"recall", "precision", "specificity", "f1"}
