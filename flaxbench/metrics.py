"""Classification metrics and paired statistics on test predictions (pure numpy)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

# Resamples drawn per chunk, so memory stays ~chunk x tiles whatever num_resamples is.
_BOOTSTRAP_CHUNK = 1000
# The bootstrap behind every confidence interval flaxbench reports (report rows, external evaluations).
CI_LEVEL = 0.95
CI_RESAMPLES = 10000
CI_SEED = 0
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


def calibration_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> CalibrationBins:
    """The tiles in `bins` equal-width bins of top-class confidence (a reliability diagram's bars)."""
    probabilities, labels = np.asarray(probabilities, np.float64), np.asarray(labels)
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)  # confidence 1.0 goes to the top bin
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(which, weights=(predicted == labels).astype(np.float64), minlength=bins) / counts
    return CalibrationBins(np.linspace(0.0, 1.0, bins + 1), counts, mean_confidence, accuracy)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE (Guo et al. 2017): over `bins` equal-width bins of top-class confidence, the tile-weighted mean
    gap between accuracy and mean confidence; 0 is calibrated."""
    binned = calibration_bins(probabilities, labels, bins)
    filled = binned.counts > 0
    if not filled.any():
        return 0.0
    gaps = np.abs(binned.accuracy[filled] - binned.confidence[filled])
    return float(np.sum(binned.counts[filled] * gaps) / binned.counts.sum())


def bootstrap_accuracy_ci(
    correct: np.ndarray,
    *,
    level: float = 0.95,
    num_resamples: int = 10000,
    seed: int = 0,
    trials: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of accuracy, resampling tiles with replacement.

    `correct[i]` is 1/0 (or True/False) for tile i. To pool several predictions per tile (e.g.
    several seeds on one test set), pass `trials[i]` predictions of which `correct[i]` were right:
    a tile's predictions are resampled together and accuracy is sum(correct) / sum(trials).
    The same `seed` gives the same interval on every call.
    """
    correct = np.asarray(correct, dtype=np.float64).reshape(-1)
    trials = np.ones_like(correct) if trials is None else np.asarray(trials, dtype=np.float64).reshape(-1)
    if correct.size == 0:
        raise ValueError("no tiles to bootstrap")
    if trials.shape != correct.shape:
        raise ValueError(f"correct ({correct.size}) and trials ({trials.size}) differ in length")
    if np.any(trials <= 0) or np.any(correct < 0) or np.any(correct > trials):
        raise ValueError("need 0 <= correct[i] <= trials[i] and trials[i] > 0 for every tile")

    return _percentile_bootstrap(
        correct.size, lambda picks: correct[picks].sum(axis=1) / trials[picks].sum(axis=1), level, num_resamples, seed
    )


def bootstrap_balanced_accuracy_ci(
    correct: np.ndarray,
    trials: np.ndarray,
    labels: np.ndarray,
    *,
    level: float = 0.95,
    num_resamples: int = 10000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of balanced accuracy (mean recall over the classes a
    resample holds), resampling tiles with replacement; `correct`/`trials` as in bootstrap_accuracy_ci,
    `labels[i]` the true class of tile i."""
    correct, trials = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (correct, trials))
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if correct.size == 0 or not correct.size == trials.size == labels.size:
        raise ValueError("need equally many correct, trials and labels, at least one tile")
    num_classes = int(labels.max()) + 1

    def balanced(picks: np.ndarray) -> np.ndarray:
        # Per resample and class sums in one bincount: resample r, class c -> bin r * C + c.
        keys = (np.arange(len(picks))[:, None] * num_classes + labels[picks]).ravel()
        size = len(picks) * num_classes
        right = np.bincount(keys, weights=correct[picks].ravel(), minlength=size).reshape(len(picks), num_classes)
        tried = np.bincount(keys, weights=trials[picks].ravel(), minlength=size).reshape(len(picks), num_classes)
        recall = np.divide(right, tried, out=np.zeros_like(right), where=tried > 0)
        return recall.sum(axis=1) / (tried > 0).sum(axis=1)

    return _percentile_bootstrap(correct.size, balanced, level, num_resamples, seed)


def bootstrap_paired_difference_ci(
    correct_a: np.ndarray, correct_b: np.ndarray, *, level: float = 0.95, num_resamples: int = 10000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of accuracy(A) - accuracy(B) for two classifiers scored on the same
    tiles: a resample draws tiles with replacement and keeps both outcomes of each, so the pairing counts."""
    a = np.asarray(correct_a, dtype=np.float64).reshape(-1)
    b = np.asarray(correct_b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"need paired outcomes of equal, nonzero length, got {a.size} and {b.size}")
    difference = a - b
    return _percentile_bootstrap(a.size, lambda picks: difference[picks].mean(axis=1), level, num_resamples, seed)


def bootstrap_macro_auc_ci(
    probabilities: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    tiles: Sequence[np.ndarray] | None = None,
    *,
    level: float = 0.95,
    num_resamples: int = 10000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of macro one-vs-rest AUC, or of its mean over several runs.

    Run r scored its tiles with `probabilities[r]` (n_r, C), their true classes `labels[r]`; `tiles[r]`
    places them among all the tiles resampled (default: one run, every tile). A resample draws tiles
    with replacement, each run's AUC counts a drawn tile as often as it is drawn, and runs sharing a
    tile (seeds on one test set) see the same draws. Ties count half, as in `one_vs_rest_auc`; a
    class without positives or negatives in a resample is left out of its mean.
    """
    probabilities = [np.asarray(p, np.float64) for p in probabilities]
    labels = [np.asarray(y, np.int64).reshape(-1) for y in labels]
    tiles = [np.arange(len(labels[0]))] if tiles is None else [np.asarray(t, np.int64) for t in tiles]
    if not (len(probabilities) == len(labels) == len(tiles) > 0) or any(
            p.ndim != 2 or not len(p) == len(y) == len(t) > 0 for p, y, t in zip(probabilities, labels, tiles)):
        raise ValueError("need per run probabilities (n, classes), labels and tile positions of equal, nonzero "
                         "length")
    num_tiles = int(max(t.max() for t in tiles)) + 1
    runs = [_DrawnAuc(p, y, t, num_tiles) for p, y, t in zip(probabilities, labels, tiles)]
    return _percentile_bootstrap(num_tiles, lambda picks: np.mean([run.macro_auc(picks) for run in runs], axis=0),
                                 level, num_resamples, seed)


_AUC_DRAWS_PER_BLOCK = 2**18  # tile draws tallied together: 36 resamples of 7,180 tiles, all 1,000 of 262


class _DrawnAuc:
    """One run's macro AUC over resamples of tiles, each class's AUC from a tally of the drawn tiles.

    Per class, the run's tiles are coded by their rank among that class's distinct scores (tied
    scores share one) and by being positive; a resample's tally of codes gives, per score, the
    drawn positives and negatives, and from them the AUC (the Mann-Whitney U over the drawn pairs).
    """

    def __init__(self, probabilities: np.ndarray, labels: np.ndarray, tiles: np.ndarray, num_tiles: int):
        self.in_run = None if len(tiles) == num_tiles else np.isin(np.arange(num_tiles), tiles)
        self.classes = []  # per class: (code at each tile position, the run's number of tiles)
        for c in range(probabilities.shape[1]):
            scores = probabilities[:, c]
            order = np.argsort(scores, kind="stable")
            new_score = np.r_[True, scores[order][1:] != scores[order][:-1]]
            rank = np.empty(len(scores), np.int64)
            rank[order] = np.cumsum(new_score) - 1
            code = np.zeros(num_tiles, np.int64)  # read at the run's own tiles only
            code[tiles] = rank + len(scores) * (labels == c)  # positives after all negatives
            self.classes.append((code, len(scores)))

    def macro_auc(self, picks: np.ndarray) -> np.ndarray:
        """The run's macro AUC on each resample (rows of `picks`, drawn tile positions); NaN where none is defined."""
        # A few resamples at a time, so that their tallies stay in cache: on 7,180 tiles of 9 classes,
        # 1,000 resamples took 1.6 s at once and 0.4-0.6 s in blocks of 16-32 (2-core AMD EPYC, shared);
        # on few tiles, larger blocks save the per-block overhead.
        block = max(1, _AUC_DRAWS_PER_BLOCK // picks.shape[1])
        return np.concatenate([self._macro_auc(picks[start:start + block]) for start in range(0, len(picks), block)])

    def _macro_auc(self, picks: np.ndarray) -> np.ndarray:
        resamples = len(picks)
        if self.in_run is None:
            row, drawn = np.repeat(np.arange(resamples), picks.shape[1]), picks.ravel()
        else:  # only the draws that land on the run's tiles (a fold's, of all folds' tiles)
            row, column = np.nonzero(self.in_run[picks])
            drawn = picks[row, column]
        aucs = []
        for code, size in self.classes:
            tally = np.bincount(row * (2 * size) + code[drawn], minlength=resamples * 2 * size)
            negatives, positives = tally.reshape(resamples, 2, size).transpose(1, 0, 2)  # drawn, per score rank
            # twice the wins of the positives, in integers: 2 per negative scored lower, 1 per tie
            wins = (positives * (2 * np.cumsum(negatives, axis=1) - negatives)).sum(axis=1)
            pairs = 2 * positives.sum(axis=1) * negatives.sum(axis=1)
            aucs.append(np.divide(wins, pairs, out=np.full(resamples, np.nan), where=pairs > 0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any defined AUC: NaN
            return np.nanmean(np.stack(aucs, axis=1), axis=1)


def _percentile_bootstrap(
    num_tiles: int, statistic, level: float, num_resamples: int, seed: int
) -> tuple[float, float]:
    """The `level` percentile interval of `statistic(picks)` over `num_resamples` resamples of the tiles."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}")
    rng = np.random.default_rng(seed)
    values = np.empty(num_resamples, dtype=np.float64)
    for start in range(0, num_resamples, _BOOTSTRAP_CHUNK):
        stop = min(start + _BOOTSTRAP_CHUNK, num_resamples)
        values[start:stop] = statistic(rng.integers(0, num_tiles, size=(stop - start, num_tiles)))
    tail = (1.0 - level) / 2.0
    low, high = np.nanquantile(values, [tail, 1.0 - tail])  # NaN: a resample where the statistic is undefined
    return float(low), float(high)


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
