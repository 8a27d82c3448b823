"""Percentile-bootstrap confidence intervals of test metrics, resampling tiles with replacement (pure numpy)."""

from __future__ import annotations

import warnings

import numpy as np

# Resamples drawn per chunk, so memory stays ~chunk x tiles whatever num_resamples is.
_BOOTSTRAP_CHUNK = 1000
# The level of every confidence interval flaxbench reports (report rows, external evaluations), and the
# bootstrap behind the paired accuracy differences' (the others: flaxbench.class_intervals, auc_intervals).
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
