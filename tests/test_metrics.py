"""Metrics on hand-computed cases: confusion matrix, per-class/macro scores, bootstrap CI, McNemar."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flaxbench import metrics

# 3 classes, 8 tiles, worked out by hand below.
LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2])
PREDICTIONS = np.array([0, 0, 1, 1, 2, 2, 2, 0])
HAND_CM = np.array([[2, 1, 0], [0, 1, 1], [1, 0, 2]])


def test_confusion_matrix_rows_are_true_classes():
    cm = metrics.confusion_matrix(LABELS, PREDICTIONS, 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, HAND_CM)


def test_confusion_matrix_keeps_classes_never_seen():
    cm = metrics.confusion_matrix(np.array([0, 0]), np.array([0, 1]), 4)
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_confusion_matrix_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match="predictions"):
        metrics.confusion_matrix(np.array([0, 1]), np.array([0, 3]), 3)


def test_per_class_metrics_hand_case():
    scores = metrics.per_class_metrics(HAND_CM, ["a", "b", "c"])
    # a: TP 2, predicted 3, true 3; b: TP 1, predicted 2, true 2; c: TP 2, predicted 3, true 3; 8 tiles in all,
    # so a's 5 other tiles hold 1 false positive (specificity 4/5), b's 6 hold 1, c's 5 hold 1.
    assert scores["a"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "specificity": 4 / 5,
                                         "support": 3})
    assert scores["b"] == pytest.approx({"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2, "specificity": 5 / 6,
                                         "support": 2})
    assert scores["c"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "specificity": 4 / 5,
                                         "support": 3})
    assert isinstance(scores["a"]["support"], int)


def test_per_class_metrics_undefined_ratios_are_zero():
    # Class 1 is never predicted (precision 0/0) and class 2 has no tiles (recall 0/0).
    cm = np.array([[3, 0, 1], [2, 0, 0], [0, 0, 0]])
    scores = metrics.per_class_metrics(cm, ["x", "y", "z"])
    assert scores["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "specificity": 1.0, "support": 2}
    assert scores["z"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "specificity": 5 / 6,
                                         "support": 0})
    only = metrics.per_class_metrics(np.array([[2, 0], [0, 0]]), ["only", "none"])["only"]
    assert only["specificity"] == 0.0  # no tiles of other classes: 0/0
    assert scores["x"]["precision"] == pytest.approx(3 / 5)
    assert scores["x"]["recall"] == pytest.approx(3 / 4)


def test_macro_f1_hand_case():
    assert metrics.macro_f1(HAND_CM) == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)


def test_macro_f1_skips_classes_absent_from_labels_and_predictions():
    cm = np.zeros((4, 4), dtype=np.int64)
    cm[:3, :3] = HAND_CM
    assert metrics.macro_f1(cm) == pytest.approx(metrics.macro_f1(HAND_CM))


def test_balanced_accuracy_is_mean_recall_over_supported_classes():
    cm = np.array([[9, 1, 0], [1, 1, 0], [0, 0, 0]])  # recalls 0.9 and 0.5; class 2 has no tiles
    assert metrics.balanced_accuracy(cm) == pytest.approx(0.7)
    # Plain accuracy is 10/12: balanced accuracy must not weight by support.
    assert metrics.balanced_accuracy(cm) != pytest.approx(10 / 12)


def _correct(num_right: int, num_tiles: int) -> np.ndarray:
    return np.random.default_rng(1).permutation(np.arange(num_tiles) < num_right)


def test_bootstrap_ci_contains_estimate_and_is_reproducible():
    correct = _correct(80, 100)
    low, high = metrics.bootstrap_accuracy_ci(correct, num_resamples=2000, seed=3)
    assert low < 0.8 < high
    assert (low, high) == metrics.bootstrap_accuracy_ci(correct, num_resamples=2000, seed=3)
    # The seed is what fixes it: other seeds move the (discrete, 1/100-step) bounds somewhere.
    others = {metrics.bootstrap_accuracy_ci(correct, num_resamples=200, seed=s) for s in range(5)}
    assert len(others) > 1
    # Roughly the normal-approximation width 2 * 1.96 * sqrt(0.8 * 0.2 / 100) = 0.157.
    assert high - low == pytest.approx(0.157, abs=0.03)


def test_bootstrap_ci_narrows_with_more_tiles():
    small = metrics.bootstrap_accuracy_ci(_correct(70, 100), num_resamples=2000)
    large = metrics.bootstrap_accuracy_ci(_correct(700, 1000), num_resamples=2000)
    assert large[0] < 0.7 < large[1]
    # Width scales like 1/sqrt(n): 10x tiles -> about 1/3.16 of the width.
    assert (large[1] - large[0]) < 0.45 * (small[1] - small[0])


def test_bootstrap_ci_level_widens_interval():
    correct = _correct(60, 100)
    narrow = metrics.bootstrap_accuracy_ci(correct, level=0.5, num_resamples=2000)
    wide = metrics.bootstrap_accuracy_ci(correct, level=0.99, num_resamples=2000)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_bootstrap_ci_with_trials_keeps_a_tiles_predictions_together():
    # Three seeds that agree on every tile carry no more information than one seed.
    correct = _correct(75, 100).astype(int)
    one_seed = metrics.bootstrap_accuracy_ci(correct, num_resamples=2000)
    three_seeds = metrics.bootstrap_accuracy_ci(3 * correct, trials=np.full(100, 3), num_resamples=2000)
    assert three_seeds == pytest.approx(one_seed)


def test_bootstrap_ci_rejects_empty_input():
    with pytest.raises(ValueError, match="no tiles"):
        metrics.bootstrap_accuracy_ci(np.array([], dtype=bool))


def test_mcnemar_exact_binomial_hand_case():
    # b01 = 1 (A wrong, B right), b10 = 6 (A right, B wrong), plus 5 concordant tiles.
    a = np.array([0] + [1] * 6 + [1, 1, 1, 0, 0], dtype=bool)
    b = np.array([1] + [0] * 6 + [1, 1, 1, 0, 0], dtype=bool)
    expected = 2 * (math.comb(7, 0) + math.comb(7, 1)) / 2**7
    assert expected == 0.125
    assert metrics.mcnemar_p_value(a, b) == pytest.approx(expected)
    assert metrics.mcnemar_p_value(b, a) == pytest.approx(expected)  # two-sided: symmetric


def test_mcnemar_balanced_discordance_is_capped_at_one():
    a = np.array([1, 1, 0, 0], dtype=bool)
    b = np.array([0, 0, 1, 1], dtype=bool)  # b01 = b10 = 2: 2 * P(X <= 2 | n=4) = 1.375 -> 1
    assert metrics.mcnemar_p_value(a, b) == 1.0


def test_mcnemar_without_discordant_pairs_is_one():
    a = np.array([1, 0, 1, 1], dtype=bool)
    assert metrics.mcnemar_p_value(a, a.copy()) == 1.0


def test_mcnemar_large_counts_stay_finite():
    a = np.r_[np.ones(2000), np.zeros(3000)].astype(bool)
    b = np.r_[np.zeros(2000), np.zeros(3000)].astype(bool)
    assert metrics.mcnemar_p_value(a, b) == 0.0  # 2 / 2**2000 underflows to 0, no OverflowError


def test_one_vs_rest_auc_hand_cases():
    # class 0: positives score 0.9 and 0.4, negatives 0.5 and 0.1: 3 of 4 pairs ordered right.
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5], [0.1, 0.9]])
    labels = np.array([0, 0, 1, 1])
    aucs = metrics.one_vs_rest_auc(probabilities, labels)
    assert aucs == [pytest.approx(0.75), pytest.approx(0.75)]
    assert metrics.one_vs_rest_auc(np.array([[0.5, 0.5]] * 4), labels) == [0.5, 0.5]  # ties count half
    assert metrics.one_vs_rest_auc(probabilities[:, ::-1], labels) == [pytest.approx(0.25)] * 2
    three = metrics.one_vs_rest_auc(np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1]]), np.array([0, 1]))
    assert three == [1.0, 1.0, None]  # class 2 has no positives
    assert metrics.macro_auc(three) == 1.0 and metrics.macro_auc([None]) is None


def test_split_metrics_hold_probabilities_and_auc():
    from flaxbench.evaluation import split_metrics

    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.6, 0.25, 0.15]]))
    result = split_metrics(logits, np.array([0, 1, 2, 1]), ("a", "b", "c"), ["w", "x", "y", "z"])
    probabilities = np.array(result["predictions"]["probabilities"])
    np.testing.assert_allclose(probabilities, np.exp(logits), atol=1e-6)
    assert result["per_class"]["c"]["auc"] == 1.0  # the one c tile has the highest c probability
    assert result["per_class"]["a"]["auc"] == pytest.approx(1.0) and result["per_class"]["b"]["auc"] == pytest.approx(0.75)
    assert result["macro_auc"] == pytest.approx((1.0 + 0.75 + 1.0) / 3)


def test_expected_calibration_error_hand_cases():
    # Four tiles at confidence 0.9 of which half are right: one bin, gap |0.5 - 0.9|.
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    assert metrics.expected_calibration_error(probabilities, np.array([0, 1, 1, 0])) == pytest.approx(0.4)
    # Two bins: 0.9 all right (gap 0.1), 0.6 all wrong (gap 0.6), equal weights.
    mixed = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    assert metrics.expected_calibration_error(mixed, np.array([0, 0, 1, 1])) == pytest.approx((0.1 + 0.6) / 2)
    assert metrics.expected_calibration_error(np.array([[1.0, 0.0]]), np.array([0])) == 0.0


def test_calibration_bins_hold_each_tile_once_with_its_bins_confidence_and_accuracy():
    # Confidences 0.95 (right), 0.9 (wrong), 0.55 (right) and exactly 1.0 (right) in 10 bins.
    probabilities = np.array([[0.95, 0.05], [0.1, 0.9], [0.45, 0.55], [1.0, 0.0]])
    binned = metrics.calibration_bins(probabilities, np.array([0, 0, 1, 0]), bins=10)
    np.testing.assert_allclose(binned.edges, np.linspace(0, 1, 11))
    assert binned.counts.tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 3]  # 0.9, 0.95 and 1.0 share the top bin
    assert binned.confidence[9] == pytest.approx((0.95 + 0.9 + 1.0) / 3)
    assert binned.accuracy[9] == pytest.approx(2 / 3) and binned.accuracy[5] == 1.0
    assert np.isnan(binned.accuracy[0]) and np.isnan(binned.confidence[0])  # empty bins are not 0% accurate
    # ECE is the tile-weighted gap of these bars.
    expected = (3 * abs(2 / 3 - (0.95 + 0.9 + 1.0) / 3) + abs(1.0 - 0.55)) / 4
    assert metrics.expected_calibration_error(probabilities, np.array([0, 0, 1, 0]), bins=10) == pytest.approx(expected)


def test_bootstrap_balanced_accuracy_ci_hand_cases():
    # Class 0: 90 tiles, all right; class 1: 10 tiles, none right: balanced accuracy 0.5 in every resample
    # that holds both classes, while plain accuracy is 0.9.
    labels = np.array([0] * 90 + [1] * 10)
    correct = (labels == 0).astype(int)
    low, high = metrics.bootstrap_balanced_accuracy_ci(correct, np.ones(100), labels, num_resamples=500)
    assert low == pytest.approx(0.5) and high == pytest.approx(0.5)
    acc_low, acc_high = metrics.bootstrap_accuracy_ci(correct, num_resamples=500)
    assert acc_low > 0.8 and acc_high < 0.97
    # Mixed outcomes: the interval contains the estimate, is reproducible and narrower for more tiles.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    correct = rng.random(300) < np.array([0.9, 0.6, 0.3])[labels]
    estimate = np.mean([correct[labels == c].mean() for c in range(3)])
    low, high = metrics.bootstrap_balanced_accuracy_ci(correct, np.ones(300), labels, num_resamples=2000)
    assert low < estimate < high and 0.05 < high - low < 0.2
    assert (low, high) == metrics.bootstrap_balanced_accuracy_ci(correct, np.ones(300), labels, num_resamples=2000)


def test_holm_adjustment_by_hand():
    assert metrics.holm_adjusted([0.01, None, 0.04, 0.03, 0.005]) == pytest.approx([0.03, None, 0.06, 0.06, 0.02])
    assert metrics.holm_adjusted([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1, order kept
    assert metrics.holm_adjusted([None]) == [None]


def test_paired_difference_ci_follows_the_pairing():
    same = np.array([True, False] * 50)
    assert metrics.bootstrap_paired_difference_ci(same, same) == (0.0, 0.0)  # identical outcomes: no spread at all
    better = np.ones(100, bool)
    low, high = metrics.bootstrap_paired_difference_ci(better, same)
    assert 0.38 < low < 0.5 < high < 0.62
    with pytest.raises(ValueError, match="paired outcomes of equal"):
        metrics.bootstrap_paired_difference_ci(same, same[:10])


def test_auc_over_drawn_tiles_counts_each_as_often_as_drawn():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 80)
    probabilities = np.round(rng.dirichlet(np.ones(3), 80) + 0.4 * np.eye(3)[labels], 1)  # rounded: many ties
    macro = metrics._DrawnAuc(probabilities, labels, np.arange(80), 80).macro_auc
    every_tile_once = np.arange(80)[None]
    assert macro(every_tile_once)[0] == pytest.approx(metrics.macro_auc(metrics.one_vs_rest_auc(probabilities, labels)))
    drawn = rng.integers(0, 80, (3, 80))
    for k in range(3):
        expected = metrics.macro_auc(metrics.one_vs_rest_auc(probabilities[drawn[k]], labels[drawn[k]]))
        assert macro(drawn)[k] == pytest.approx(expected, abs=1e-12)
    half = metrics._DrawnAuc(probabilities[40:], labels[40:], np.arange(40, 80), 80).macro_auc(drawn)
    for k in range(3):  # a run on tiles 40-79 of 80 (a fold) sees only the draws of its tiles
        mine = drawn[k][drawn[k] >= 40]
        assert half[k] == pytest.approx(metrics.macro_auc(metrics.one_vs_rest_auc(probabilities[mine],
                                                                                  labels[mine])), abs=1e-12)


def test_macro_auc_ci_holds_the_estimate_and_the_mean_of_runs_sharing_tiles():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, 200)
    runs = [rng.dirichlet(np.ones(4), 200) + strength * np.eye(4)[labels] for strength in (0.3, 0.6)]
    estimates = [metrics.macro_auc(metrics.one_vs_rest_auc(p, labels)) for p in runs]
    low, high = metrics.bootstrap_macro_auc_ci([runs[0]], [labels])
    assert low < estimates[0] < high < 1.0 and (low, high) == metrics.bootstrap_macro_auc_ci([runs[0]], [labels])
    tiles = np.arange(200)
    both = metrics.bootstrap_macro_auc_ci(runs, [labels, labels], [tiles, tiles])
    assert both[0] < np.mean(estimates) < both[1] and both != (low, high)
    folds = metrics.bootstrap_macro_auc_ci([runs[0][:100], runs[0][100:]], [labels[:100], labels[100:]],
                                           [tiles[:100], tiles[100:]])  # two folds: each run its own tiles
    assert folds[0] < np.mean([metrics.macro_auc(metrics.one_vs_rest_auc(runs[0][s], labels[s]))
                               for s in (slice(0, 100), slice(100, 200))]) < folds[1]
    with pytest.raises(ValueError, match="equal, nonzero"):
        metrics.bootstrap_macro_auc_ci([runs[0]], [labels[:10]])



def test_roc_curve_hand_case_with_a_tie():
    # scores 0.9 (pos), 0.8 (neg), 0.8 (pos), 0.1 (neg): the tied pair enters at one threshold
    fpr, tpr = metrics.roc_curve(np.array([0.9, 0.8, 0.8, 0.1]), np.array([True, False, True, False]))
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0.0, 0.5, 1.0, 1.0])
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.one_vs_rest_auc(
        np.array([[0.1, 0.9], [0.2, 0.8], [0.2, 0.8], [0.9, 0.1]]), np.array([1, 0, 1, 0]))[1])
    assert metrics.roc_curve(np.array([0.3, 0.4]), np.array([True, True])) is None  # no negatives
