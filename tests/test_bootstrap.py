"""Bootstrap confidence intervals: they hold the estimate, are reproducible, and resample tiles as documented."""

from __future__ import annotations

import numpy as np
import pytest

from flaxbench import bootstrap, metrics


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


def test_auc_over_drawn_tiles_counts_each_as_often_as_drawn():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 80)
    probabilities = np.round(rng.dirichlet(np.ones(3), 80) + 0.4 * np.eye(3)[labels], 1)  # rounded: many ties

    def expected(tiles: np.ndarray) -> list[float]:  # each class's AUC on these tiles, NaN where undefined
        return [np.nan if auc is None else auc for auc in metrics.one_vs_rest_auc(probabilities[tiles], labels[tiles])]

    aucs = bootstrap._DrawnAuc(probabilities, labels, np.arange(80), 80).class_aucs
    np.testing.assert_allclose(aucs(np.arange(80)[None])[0], expected(np.arange(80)))
    drawn = rng.integers(0, 80, (3, 80))
    for k in range(3):
        np.testing.assert_allclose(aucs(drawn)[k], expected(drawn[k]), atol=1e-12)
    half = bootstrap._DrawnAuc(probabilities[40:], labels[40:], np.arange(40, 80), 80).class_aucs(drawn)
    for k in range(3):  # a run on tiles 40-79 of 80 (a fold) sees only the draws of its tiles
        np.testing.assert_allclose(half[k], expected(drawn[k][drawn[k] >= 40]), atol=1e-12)


def test_macro_auc_ci_holds_the_estimate_and_the_mean_of_runs_sharing_tiles():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, 200)
    runs = [rng.dirichlet(np.ones(4), 200) + strength * np.eye(4)[labels] for strength in (0.3, 0.6)]
    estimates = [metrics.macro_auc(metrics.one_vs_rest_auc(p, labels)) for p in runs]
    low, high = bootstrap.bootstrap_macro_auc_ci([runs[0]], [labels])
    assert low < estimates[0] < high < 1.0 and (low, high) == bootstrap.bootstrap_macro_auc_ci([runs[0]], [labels])
    tiles = np.arange(200)
    both = bootstrap.bootstrap_macro_auc_ci(runs, [labels, labels], [tiles, tiles])
    assert both[0] < np.mean(estimates) < both[1] and both != (low, high)
    folds = bootstrap.bootstrap_macro_auc_ci([runs[0][:100], runs[0][100:]], [labels[:100], labels[100:]],
                                             [tiles[:100], tiles[100:]])  # two folds: each run its own tiles
    assert folds[0] < np.mean([metrics.macro_auc(metrics.one_vs_rest_auc(runs[0][s], labels[s]))
                               for s in (slice(0, 100), slice(100, 200))]) < folds[1]
    with pytest.raises(ValueError, match="equal, nonzero"):
        bootstrap.bootstrap_macro_auc_ci([runs[0]], [labels[:10]])
