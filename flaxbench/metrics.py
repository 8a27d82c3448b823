"""Classification metrics, calibration and paired tests on test predictions (pure numpy; confidence
intervals: flaxbench.class_intervals and auc_intervals)."""

from __future__ import annotations

import math
from statistics import NormalDist
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

ECE_BINS = 15  # the confidence bins of ECE and of the report's reliability diagrams


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts as int64 (C, C): rows are true classes, columns predicted classes."""
    labels = np.asarray(labels).reshape(-1)
    predictions = np.asarray(predictions).reshape(-1)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels ({labels.size}) and predictions ({predictions.size}) differ in length")
    for what, values in (("labels", labels), ("predictions", predictions)):
        if values.size and not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{what} must be integer class indices, got dtype {values.dtype}")
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{what} must lie in [0, {num_classes}), got range [{values.min()}, {values.max()}]")
    flat = labels.astype(np.int64) * num_classes + predictions.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes).astype(np.int64)


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator elementwise, 0.0 where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _precision_recall_f1(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 of a confusion matrix; 0.0 where undefined."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {cm.shape}")
    true_positives = np.diag(cm).astype(np.float64)
    precision = _safe_ratio(true_positives, cm.sum(axis=0))
    recall = _safe_ratio(true_positives, cm.sum(axis=1))
    f1 = _safe_ratio(2 * precision * recall, precision + recall)
    return precision, recall, f1


def per_class_metrics(cm: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """{class: {precision, recall, f1, specificity, support}} from a confusion matrix.

    Specificity is the share of the other classes' tiles not predicted as the class. A ratio with
    a zero denominator is reported as 0.0: precision of a class that is never predicted, recall of
    a class with no test tiles, specificity with no tiles of other classes, and F1 when precision +
    recall is 0.
    """
    cm = np.asarray(cm)
    precision, recall, f1 = _precision_recall_f1(cm)
    if len(classes) != cm.shape[0]:
        raise ValueError(f"{len(classes)} class names for a {cm.shape[0]}-class confusion matrix")
    support = cm.sum(axis=1)
    false_positives = cm.sum(axis=0) - np.diag(cm)
    negatives = cm.sum() - support  # tiles of the other classes
    specificity = _safe_ratio((negatives - false_positives).astype(np.float64), negatives)
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "specificity": float(specificity[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }


def macro_f1(cm: np.ndarray) -> float:
    """Unweighted mean F1 over classes that occur as a true label or as a prediction.

    A class absent from both carries no information and is left out (scikit-learn's default
    when no label list is given); an occurring class with undefined F1 counts as 0.0.
    """
    cm = np.asarray(cm)
    _, _, f1 = _precision_recall_f1(cm)
    occurring = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    return float(f1[occurring].mean()) if occurring.any() else 0.0


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean recall over the classes that have at least one true tile; 0.0 for an empty matrix."""
    cm = np.asarray(cm)
    _, recall, _ = _precision_recall_f1(cm)
    supported = cm.sum(axis=1) > 0
    return float(recall[supported].mean()) if supported.any() else 0.0


def one_vs_rest_auc(probabilities: np.ndarray, labels: np.ndarray) -> list[float | None]:
    """ROC AUC of each class against the rest, from class probabilities (N, C); None where a class has no
    positives or no negatives. Ties count half, as in the Mann-Whitney U statistic it equals."""
    from scipy.stats import mannwhitneyu

    probabilities, labels = np.asarray(probabilities, np.float64), np.asarray(labels)
    aucs: list[float | None] = []
    for c in range(probabilities.shape[1]):
        positive, negative = probabilities[labels == c, c], probabilities[labels != c, c]
        if not len(positive) or not len(negative):
            aucs.append(None)
            continue
        u = mannwhitneyu(positive, negative, alternative="two-sided").statistic
        aucs.append(float(u / (len(positive) * len(negative))))
    return aucs


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(false positive rates, true positive rates) of `scores` for `positive` tiles, one point per distinct score
    from (0, 0) to (1, 1); None without positives or negatives."""
    scores, positive = np.asarray(scores, np.float64).reshape(-1), np.asarray(positive, bool).reshape(-1)
    num_positive = int(positive.sum())
    if num_positive in (0, len(positive)):
        return None
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], positive[order]
    last_of_score = np.r_[ranked[1:] != ranked[:-1], True]  # a threshold takes every tile of its score
    true_positives, false_positives = np.cumsum(hits)[last_of_score], np.cumsum(~hits)[last_of_score]
    return (np.r_[0.0, false_positives / (len(positive) - num_positive)], np.r_[0.0, true_positives / num_positive])


def macro_auc(aucs: Sequence[float | None]) -> float | None:
    """Mean one-vs-rest AUC over the classes that have one (None if none does)."""
    defined = [a for a in aucs if a is not None]
    return float(np.mean(defined)) if defined else None


class CalibrationBins(NamedTuple):
    """Test tiles binned by top-class confidence: per bin, its tiles, their mean confidence and their accuracy."""

    edges: np.ndarray  # (bins + 1,) equal-width bin edges over [0, 1]
    counts: np.ndarray  # (bins,) tiles per bin
    confidence: np.ndarray  # (bins,) mean top-class probability of the bin's tiles; NaN for an empty bin
    accuracy: np.ndarray  # (bins,) fraction of the bin's tiles predicted right; NaN for an empty bin

    def ece(self) -> float:
        """The tile-weighted mean gap between the bins' accuracy and mean confidence (0 without tiles)."""
        filled = self.counts > 0
        if not filled.any():
            return 0.0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float(np.sum(self.counts[filled] * gaps) / self.counts.sum())


def calibration_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> CalibrationBins:
    """The tiles in `bins` equal-width bins of top-class confidence (a reliability diagram's bars), each bin closed on
    the right as Guo et al. (2017) define them: ((k - 1) / bins, k / bins]."""
    probabilities, labels = np.asarray(probabilities, np.float64), np.asarray(labels)
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(which, weights=(predicted == labels).astype(np.float64), minlength=bins) / counts
    return CalibrationBins(np.linspace(0.0, 1.0, bins + 1), counts, mean_confidence, accuracy)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE (Guo et al. 2017): over `bins` equal-width bins of top-class confidence, the tile-weighted mean
    gap between accuracy and mean confidence; 0 is calibrated."""
    return calibration_bins(probabilities, labels, bins).ece()


def mcnemar_p_value(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact two-sided McNemar p-value for two classifiers scored on the same tiles.

    Only discordant tiles count: b01 (A wrong, B right) and b10 (A right, B wrong). Under the
    null each is Binomial(b01 + b10, 1/2); p = min(1, 2 * P(X <= min(b01, b10))), and 1.0
    when there are no discordant tiles.
    """
    correct_a = np.asarray(correct_a, dtype=bool).reshape(-1)
    correct_b = np.asarray(correct_b, dtype=bool).reshape(-1)
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"paired outcomes differ in length: {correct_a.size} vs {correct_b.size}")
    b01 = int(np.count_nonzero(~correct_a & correct_b))
    b10 = int(np.count_nonzero(correct_a & ~correct_b))
    discordant = b01 + b10
    if discordant == 0:
        return 1.0
    # Exact integer arithmetic: the tail sum and 2**n stay exact however many tiles there are.
    tail = sum(math.comb(discordant, k) for k in range(min(b01, b10) + 1))
    return min(1.0, 2 * tail / 2**discordant)


# Above this sum of the tiles' differences (in steps of 1 / lcm(seeds)), the sign-flip test's exact null
# distribution (a convolution as long) gives way to its normal approximation: thousands of tiles differ then.
EXACT_SIGN_FLIP_STEPS = 20_000


def paired_p_value(share_a: np.ndarray, share_b: np.ndarray, seeds_a: int = 1, seeds_b: int = 1) -> float:
    """Two-sided p-value of the exact sign-flip (randomisation) test that rows A and B are equally accurate, from
    each tile's share of A's `seeds_a` and B's `seeds_b` seeds that were right on it.

    Under the null each tile's difference share_a - share_b is as likely negated; p is the chance that the sum of
    the differences, signs drawn so, is at least as far from 0 as observed. With one seed each this is the exact
    McNemar test (mcnemar_p_value). Past EXACT_SIGN_FLIP_STEPS, the normal approximation with a continuity correction.
    """
    share_a, share_b = (np.asarray(x, np.float64).reshape(-1) for x in (share_a, share_b))
    if share_a.shape != share_b.shape:
        raise ValueError(f"paired outcomes differ in length: {share_a.size} vs {share_b.size}")
    if seeds_a == seeds_b == 1:
        return mcnemar_p_value(share_a > 0.5, share_b > 0.5)
    from scipy.stats import binom

    scale = math.lcm(seeds_a, seeds_b)  # every difference a whole number of these steps
    steps = np.rint((share_a - share_b) * scale).astype(np.int64)
    observed, sizes = abs(int(steps.sum())), np.abs(steps[steps != 0])
    total = int(sizes.sum())
    if total == 0:
        return 1.0
    if total > EXACT_SIGN_FLIP_STEPS:
        spread = float(np.sqrt(np.sum(sizes.astype(np.float64) ** 2)))
        return min(1.0, 2 * NormalDist().cdf(-(observed - 1) / spread))  # the sum moves in steps of 2
    # The null distribution of the sum over -total..total: for each difference size v held by c tiles, v times
    # (2 Binomial(c, 1/2) - c), convolved.
    distribution = np.zeros(2 * total + 1)
    distribution[total] = 1.0
    for size, count in zip(*np.unique(sizes, return_counts=True)):
        size, count = int(size), int(count)
        shifted = np.zeros_like(distribution)
        for k, weight in enumerate(binom.pmf(np.arange(count + 1), count, 0.5)):  # moves size * (2k - count)
            shift = size * (2 * k - count)
            if shift >= 0:
                shifted[shift:] += weight * distribution[:distribution.size - shift]
            else:
                shifted[:shift] += weight * distribution[-shift:]
        distribution = shifted
    sums = np.arange(-total, total + 1)
    return min(1.0, float(distribution[np.abs(sums) >= observed].sum()))


def holm_adjusted(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values of a family of tests (None entries are not tests and stay None).

    The k-th smallest of m p-values becomes max over j <= k of min(1, (m - j + 1) * p_(j)): rejecting
    where the adjusted p is below alpha controls the family-wise error rate at alpha.
    """
    tested = sorted((p, k) for k, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, k) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[k] = running
    return adjusted
