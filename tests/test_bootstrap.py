"""The paired bootstrap of an accuracy difference: it holds the estimate, is reproducible and follows the pairing."""

from __future__ import annotations

import numpy as np
import pytest

from flaxbench import bootstrap


def _correct(num_right: int, num_tiles: int) -> np.ndarray:
    return np.random.default_rng(1).permutation(np.arange(num_tiles) < num_right)


def _accuracy_ci(correct: np.ndarray, **options) -> tuple[float, float]:
    """The percentile bootstrap of accuracy: its paired difference from a classifier wrong on every tile."""
    return bootstrap.bootstrap_paired_difference_ci(correct, np.zeros(len(correct), bool), **options)


def test_bootstrap_ci_contains_estimate_and_is_reproducible():
    correct = _correct(80, 100)
    low, high = _accuracy_ci(correct, num_resamples=2000, seed=3)
    assert low < 0.8 < high
    assert (low, high) == _accuracy_ci(correct, num_resamples=2000, seed=3)
    # The seed is what fixes it: other seeds move the (discrete, 1/100-step) bounds somewhere.
    others = {_accuracy_ci(correct, num_resamples=200, seed=s) for s in range(5)}
    assert len(others) > 1
    # Roughly the normal-approximation width 2 * 1.96 * sqrt(0.8 * 0.2 / 100) = 0.157.
    assert high - low == pytest.approx(0.157, abs=0.03)


def test_bootstrap_ci_narrows_with_more_tiles():
    small = _accuracy_ci(_correct(70, 100), num_resamples=2000)
    large = _accuracy_ci(_correct(700, 1000), num_resamples=2000)
    assert large[0] < 0.7 < large[1]
    # Width scales like 1/sqrt(n): 10x tiles -> about 1/3.16 of the width.
    assert (large[1] - large[0]) < 0.45 * (small[1] - small[0])


def test_bootstrap_ci_level_widens_interval():
    correct = _correct(60, 100)
    narrow = _accuracy_ci(correct, level=0.5, num_resamples=2000)
    wide = _accuracy_ci(correct, level=0.99, num_resamples=2000)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    with pytest.raises(ValueError, match="level"):
        _accuracy_ci(correct, level=1.0)
    with pytest.raises(ValueError, match="num_resamples"):
        _accuracy_ci(correct, num_resamples=0)


def test_paired_difference_ci_follows_the_pairing():
    same = np.array([True, False] * 50)
    assert bootstrap.bootstrap_paired_difference_ci(same, same) == (0.0, 0.0)  # identical outcomes: no spread at all
    better = np.ones(100, bool)
    low, high = bootstrap.bootstrap_paired_difference_ci(better, same)
    assert 0.38 < low < 0.5 < high < 0.62
    with pytest.raises(ValueError, match="paired outcomes of equal"):
        bootstrap.bootstrap_paired_difference_ci(same, same[:10])
