"""Percentile-bootstrap confidence intervals of test metrics, resampling tiles with replacement (pure numpy)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

# Resamples drawn per chunk, so memory stays ~chunk x tiles whatever num_resamples is.
_BOOTSTRAP_CHUNK = 1000
# The level of every confidence interval flaxbench reports (report rows, external evaluations), and the
# bootstrap behind macro AUC's and the paired accuracy differences' (the others: flaxbench.class_intervals).
CI_LEVEL = 0.95
CI_RESAMPLES = 10000
CI_SEED = 0


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
    tile (seeds on one test set) see the same draws. Ties count half, as in `metrics.one_vs_rest_auc`; a
    class without positives or negatives in a resample is left out of its mean.
    """
    num_tiles, runs = _drawn_runs(probabilities, labels, tiles)

    def macro_auc(picks: np.ndarray) -> np.ndarray:
        class_aucs = np.stack([run.class_aucs(picks) for run in runs])  # (runs, resamples, classes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # undefined everywhere: NaN
            return np.mean(np.nanmean(class_aucs, axis=2), axis=0)

    return _percentile_bootstrap(num_tiles, macro_auc, level, num_resamples, seed)


def _drawn_runs(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                tiles: Sequence[np.ndarray] | None) -> tuple[int, list[_DrawnAuc]]:
    """(tiles resampled, each run's _DrawnAuc) of the AUC bootstraps' arguments; ValueError if they do not fit."""
    probabilities = [np.asarray(p, np.float64) for p in probabilities]
    labels = [np.asarray(y, np.int64).reshape(-1) for y in labels]
    tiles = [np.arange(len(labels[0]))] if tiles is None else [np.asarray(t, np.int64) for t in tiles]
    if not (len(probabilities) == len(labels) == len(tiles) > 0) or any(
            p.ndim != 2 or not len(p) == len(y) == len(t) > 0 for p, y, t in zip(probabilities, labels, tiles)):
        raise ValueError("need per run probabilities (n, classes), labels and tile positions of equal, nonzero "
                         "length")
    num_tiles = int(max(t.max() for t in tiles)) + 1
    return num_tiles, [_DrawnAuc(p, y, t, num_tiles) for p, y, t in zip(probabilities, labels, tiles)]


_AUC_DRAWS_PER_BLOCK = 2**18  # tile draws tallied together: 36 resamples of 7,180 tiles, all 1,000 of 262


class _DrawnAuc:
    """One run's AUC of each class over resamples of tiles, each from a tally of the drawn tiles.

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

    def class_aucs(self, picks: np.ndarray) -> np.ndarray:
        """(resamples, classes): each class's AUC on each resample; NaN where the resample lacks its positives or
        negatives."""
        # A few resamples at a time, so that their tallies stay in cache: on 7,180 tiles of 9 classes,
        # 1,000 resamples took 1.6 s at once and 0.4-0.6 s in blocks of 16-32 (2-core AMD EPYC, shared);
        # on few tiles, larger blocks save the per-block overhead.
        block = max(1, _AUC_DRAWS_PER_BLOCK // picks.shape[1])
        return np.concatenate([self._class_aucs(picks[start:start + block]) for start in range(0, len(picks), block)])

    def _class_aucs(self, picks: np.ndarray) -> np.ndarray:
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
        return np.stack(aucs, axis=1)


def _percentile_bootstrap(num_tiles: int, statistic, level: float, num_resamples: int, seed: int
                          ) -> tuple[float, float]:
    """The `level` percentile interval of `statistic(picks)` (one value per resample) over `num_resamples` resamples
    of the tiles, leaving out resamples where it is undefined (NaN)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}")
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, num_resamples, _BOOTSTRAP_CHUNK):
        stop = min(start + _BOOTSTRAP_CHUNK, num_resamples)
        values.append(statistic(rng.integers(0, num_tiles, size=(stop - start, num_tiles))))
    tail = (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # undefined on every resample: NaN
        low, high = np.nanquantile(np.concatenate(values), [tail, 1.0 - tail])
    return float(low), float(high)
