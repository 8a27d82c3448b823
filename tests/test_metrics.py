"""Metrics on hand-computed cases: confusion matrix, per-class/macro scores, AUC, calibration, McNemar, Holm."""

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
    # bins closed on the right (Guo et al.): 0.9 in (0.8, 0.9], 0.95 and 1.0 in (0.9, 1.0]
    assert binned.counts.tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 1, 2]
    assert binned.confidence[9] == pytest.approx((0.95 + 1.0) / 2) and binned.confidence[8] == pytest.approx(0.9)
    assert binned.accuracy[9] == 1.0 and binned.accuracy[8] == 0.0 and binned.accuracy[5] == 1.0
    assert np.isnan(binned.accuracy[0]) and np.isnan(binned.confidence[0])  # empty bins are not 0% accurate
    # ECE is the tile-weighted gap of these bars.
    expected = (2 * abs(1.0 - 0.975) + abs(0.0 - 0.9) + abs(1.0 - 0.55)) / 4
    assert metrics.expected_calibration_error(probabilities, np.array([0, 0, 1, 0]), bins=10) == pytest.approx(expected)


def test_holm_adjustment_by_hand():
    assert metrics.holm_adjusted([0.01, None, 0.04, 0.03, 0.005]) == pytest.approx([0.03, None, 0.06, 0.06, 0.02])
    assert metrics.holm_adjusted([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1, order kept
    assert metrics.holm_adjusted([None]) == [None]


def test_roc_curve_hand_case_with_a_tie():
    # scores 0.9 (pos), 0.8 (neg), 0.8 (pos), 0.1 (neg): the tied pair enters at one threshold
    fpr, tpr = metrics.roc_curve(np.array([0.9, 0.8, 0.8, 0.1]), np.array([True, False, True, False]))
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0.0, 0.5, 1.0, 1.0])
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.one_vs_rest_auc(
        np.array([[0.1, 0.9], [0.2, 0.8], [0.2, 0.8], [0.9, 0.1]]), np.array([1, 0, 1, 0]))[1])
    assert metrics.roc_curve(np.array([0.3, 0.4]), np.array([True, True])) is None  # no negatives


def test_the_metrics_line_shows_the_accuracy_ci_where_given():
    from flaxbench.evaluation import format_metrics

    metrics_of_split = {"accuracy": 0.9, "loss": 0.3, "macro_f1": 0.88, "balanced_accuracy": 0.87}
    line = format_metrics("net", "test", {**metrics_of_split, "accuracy_ci": np.array([0.8123, 0.9571])})
    assert line.startswith("net [test] accuracy 90.00% (95% CI 81.2-95.7%)  loss 0.3000")
    assert "95% CI" not in format_metrics("net", "test", metrics_of_split, synthetic=True)
    assert "[SYNTHETIC DATA]" in format_metrics("net", "test", metrics_of_split, synthetic=True)


def test_the_recorded_tile_probabilities_reproduce_the_recorded_loss_and_aucs():
    import json

    from flaxbench.evaluation import split_metrics

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(60, 3)).astype(np.float32) * 4
    labels = rng.integers(0, 3, 60)
    logits[0] = (0.0, 20.0, -20.0)  # a confident mistake: its true class gets e^-20 of the probability
    labels[0] = 2
    logits[1:4] = logits[4]  # tied scores stay tied, nearly tied ones stay apart
    logits[5] = logits[4] + np.float32(1e-6)
    result = json.loads(json.dumps(split_metrics(logits, labels, ("a", "b", "c"), [f"t{k}" for k in range(60)])))
    probabilities = np.asarray(result["predictions"]["probabilities"])
    assert -np.mean(np.log(probabilities[np.arange(60), labels])) == pytest.approx(result["loss"], rel=1e-12)
    recomputed = metrics.one_vs_rest_auc(probabilities, labels)
    assert recomputed == [result["per_class"][name]["auc"] for name in ("a", "b", "c")]


def _sign_flip_by_enumeration(differences: np.ndarray) -> float:
    """The sign-flip test's p-value by trying every sign of every nonzero difference."""
    nonzero = differences[differences != 0]
    observed = abs(differences.sum())
    signs = np.array(np.meshgrid(*[[-1, 1]] * nonzero.size)).reshape(nonzero.size, -1) if nonzero.size else None
    if signs is None:
        return 1.0
    return float(np.mean(np.abs(nonzero @ signs) >= observed - 1e-9))


def test_paired_p_value_of_seed_shares_is_the_exact_sign_flip_test():
    rng = np.random.default_rng(0)
    for _ in range(100):
        tiles, (seeds_a, seeds_b) = int(rng.integers(1, 13)), rng.integers(1, 4, 2)
        share_a = rng.integers(0, seeds_a + 1, tiles) / seeds_a
        share_b = rng.integers(0, seeds_b + 1, tiles) / seeds_b
        assert metrics.paired_p_value(share_a, share_b, int(seeds_a), int(seeds_b)) == pytest.approx(
            _sign_flip_by_enumeration(share_a - share_b), abs=1e-9)


def test_paired_p_value_of_right_and_wrong_is_mcnemars_however_many_seeds_are_named():
    rng = np.random.default_rng(1)
    for _ in range(50):
        right_a, right_b = rng.random(200) < 0.8, rng.random(200) < 0.7
        for seeds in ((1, 1), (2, 2), (3, 2)):
            assert metrics.paired_p_value(right_a.astype(float), right_b.astype(float), *seeds) == pytest.approx(
                metrics.mcnemar_p_value(right_a, right_b), abs=1e-9)


def test_paired_p_value_past_the_exact_limit_is_close_to_the_exact_one(monkeypatch):
    rng = np.random.default_rng(2)
    share_a = rng.integers(0, 4, 3000) / 3
    share_b = np.clip(share_a - (rng.random(3000) < 0.1) / 3 + (rng.random(3000) < 0.08) / 3, 0, 1)
    exact = metrics.paired_p_value(share_a, share_b, 3, 3)
    monkeypatch.setattr(metrics, "EXACT_SIGN_FLIP_STEPS", 0)
    assert 0.001 < exact < 0.5 and metrics.paired_p_value(share_a, share_b, 3, 3) == pytest.approx(exact, rel=0.05)
