"""Balanced accuracy's, macro AUC's and each class's AUC's 95% CIs over patients or slides: tile-level intervals
widened by design effects."""

from statistics import NormalDist

import numpy as np
import pytest
from scipy.stats import t as student_t

from flaxbench import metrics
from flaxbench.auc_intervals import auc_interval, class_auc_influences, macro_auc_influence, macro_auc_interval
from flaxbench.class_intervals import balanced_accuracy_interval
from flaxbench.group_design_effects import (
    balanced_accuracy_influence, design_effect, group_balanced_accuracy_interval, group_class_auc_intervals,
    group_design_fields, group_macro_auc_interval,
)


def _scored_tiles(seed: int, tiles: int = 300, classes: int = 3, signal: float = 1.0):
    """(labels, class probabilities) of a classifier that finds the true class better than chance."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, tiles)
    logits = rng.normal(size=(tiles, classes))
    logits[np.arange(tiles), labels] += signal
    return labels, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def _width(interval) -> float:
    return interval[1] - interval[0]


def test_the_influences_give_the_tile_level_intervals_variance_over_independent_tiles():
    labels, probabilities = _scored_tiles(0)
    correct = (probabilities.argmax(axis=1) == labels).astype(float)
    balanced, influence = balanced_accuracy_influence(correct, np.ones(300), labels)
    assert balanced == pytest.approx(metrics.balanced_accuracy(
        metrics.confusion_matrix(labels, probabilities.argmax(axis=1), 3)))
    low, high = balanced_accuracy_interval(correct, np.ones(300), labels)
    assert np.sqrt(np.sum(influence ** 2)) == pytest.approx((high - low) / (2 * 1.96), rel=0.1)
    auc, influence = macro_auc_influence([probabilities], [labels], [np.arange(300)], 300)
    assert auc == pytest.approx(metrics.macro_auc(metrics.one_vs_rest_auc(probabilities, labels)))
    low, high = macro_auc_interval([probabilities], [labels])
    assert np.sqrt(np.sum(influence ** 2)) == pytest.approx((high - low) / (2 * 1.96), rel=0.15)


def test_one_tile_per_group_only_pays_for_the_groups_degrees_of_freedom():
    labels, probabilities = _scored_tiles(1)
    correct = (probabilities.argmax(axis=1) == labels).astype(float)
    groups = [f"g{k}" for k in range(300)]
    tile_ci = balanced_accuracy_interval(correct, np.ones(300), labels)
    found = group_balanced_accuracy_interval(correct, np.ones(300), labels, groups, tile_ci)
    assert found.groups == 300 and found.design_effect < 1.2
    factor = np.sqrt(found.design_effect) * student_t.ppf(0.975, 299) / NormalDist().inv_cdf(0.975)
    assert _width(found.interval) == pytest.approx(factor * _width(tile_ci))


def test_patients_right_or_wrong_as_a_whole_widen_balanced_accuracy_far_beyond_the_tiles_interval():
    # 16 patients with 10 tiles of each of 2 classes; every tile of half the patients right, of the others wrong
    groups = np.repeat([f"patient_{k}" for k in range(16)], 20)
    labels = np.tile(np.repeat([0, 1], 10), 16)
    correct = np.repeat(np.arange(16) % 2 == 0, 20).astype(float)
    tile_ci = balanced_accuracy_interval(correct, np.ones(320), labels)
    found = group_balanced_accuracy_interval(correct, np.ones(320), labels, groups, tile_ci)
    assert found.design_effect > 15 and _width(found.interval) > 3 * _width(tile_ci)
    assert found.interval[0] < 0.5 < found.interval[1] and 0.0 <= found.interval[0] and found.interval[1] <= 1.0


def test_slides_scored_well_or_badly_as_a_whole_widen_the_auc_interval():
    # 20 slides of 15 tiles; the classes well apart on half the slides and swapped on the others, as a slide's
    # staining might do
    rng = np.random.default_rng(2)
    groups = np.repeat([f"slide_{k}" for k in range(20)], 15)
    labels = rng.integers(0, 2, 300)
    separation = np.repeat(np.where(np.arange(20) % 2 == 0, 3.0, -1.0), 15)
    score = 1 / (1 + np.exp(-(separation * (labels - 0.5) + rng.normal(scale=0.5, size=300))))
    probabilities = np.stack([1 - score, score], axis=1)
    tile_ci = macro_auc_interval([probabilities], [labels])
    found = group_macro_auc_interval([probabilities], [labels], [np.arange(300)], groups, tile_ci)
    assert found.design_effect > 2 and _width(found.interval) > 1.4 * _width(tile_ci)
    independent = group_macro_auc_interval([probabilities], [labels], [np.arange(300)],
                                           [f"t{k}" for k in range(300)], tile_ci)
    assert independent.design_effect < 1.2


def test_a_class_from_one_slide_adds_nothing_to_the_spread_over_slides():
    # two classes, each on a slide of its own: every tile's influence sums to nothing per slide
    labels = np.repeat([0, 1], 30)
    correct = np.r_[np.ones(20), np.zeros(10), np.ones(25), np.zeros(5)]
    _, influence = balanced_accuracy_influence(correct, np.ones(60), labels)
    assert design_effect(influence, np.repeat(["slide_a", "slide_b"], 30)) == 1.0


def test_seeds_agreeing_give_one_runs_interval_and_one_group_gives_none():
    labels, probabilities = _scored_tiles(3, tiles=120)
    groups = np.repeat([f"p{k}" for k in range(12)], 10)
    tile_ci = (0.6, 0.8)
    one = group_macro_auc_interval([probabilities], [labels], [np.arange(120)], groups, tile_ci)
    two = group_macro_auc_interval([probabilities] * 2, [labels] * 2, [np.arange(120)] * 2, groups, tile_ci)
    assert one.interval == pytest.approx(two.interval) and one.design_effect == pytest.approx(two.design_effect)
    alone = group_macro_auc_interval([probabilities], [labels], [np.arange(120)], ["p0"] * 120, tile_ci)
    assert alone.groups == 1 and alone.interval is None
    with pytest.raises(ValueError, match="a group per tile"):
        design_effect(np.zeros(3), ["a", "b"])


def test_an_evaluations_fields_are_none_without_groups_or_probabilities():
    labels, probabilities = _scored_tiles(4, tiles=60)
    predictions = {"labels": labels.tolist(), "predictions": probabilities.argmax(axis=1).tolist(),
                   "probabilities": probabilities.tolist()}
    groups = np.repeat([f"p{k}" for k in range(6)], 10)
    assert group_design_fields(predictions, None, (0.5, 0.7), (0.6, 0.8)) == {
        "balanced_accuracy_ci_groups": None, "macro_auc_ci_groups": None}
    found = group_design_fields(predictions, groups, (0.5, 0.7), (0.6, 0.8))
    assert found["balanced_accuracy_ci_groups"][0] <= 0.5 and found["macro_auc_ci_groups"][1] >= 0.8
    without = group_design_fields({**predictions, "probabilities": []}, groups, (0.5, 0.7), (0.6, 0.8))
    assert without["macro_auc_ci_groups"] is None and without["balanced_accuracy_ci_groups"] is not None


def test_each_classs_auc_influences_match_its_value_and_about_its_tile_level_interval():
    labels, probabilities = _scored_tiles(5, tiles=400)
    for k, (auc, influence) in enumerate(class_auc_influences([probabilities], [labels], [np.arange(400)], 400)):
        assert auc == pytest.approx(metrics.one_vs_rest_auc(probabilities, labels)[k])
        positives = int(np.sum(labels == k))
        assert np.sqrt(np.sum(influence ** 2)) == pytest.approx(
            _width(auc_interval(auc, positives, 400 - positives)) / (2 * 1.96), rel=0.25)  # Hanley-McNeil's is wider


def test_a_classs_auc_over_slides_widens_where_its_slides_are_scored_well_or_badly_as_a_whole():
    # 20 slides of 15 tiles; class 0 well apart from the rest on half the slides, below it on the others
    rng = np.random.default_rng(6)
    groups = np.repeat([f"slide_{k}" for k in range(20)], 15)
    labels = rng.integers(0, 2, 300)
    separation = np.repeat(np.where(np.arange(20) % 2 == 0, 3.0, -1.0), 15)
    score = 1 / (1 + np.exp(-(separation * (0.5 - labels) + rng.normal(scale=0.5, size=300))))
    probabilities = np.stack([score, 1 - score], axis=1)
    first, _ = group_class_auc_intervals([probabilities], [labels], [np.arange(300)], groups)
    auc = metrics.one_vs_rest_auc(probabilities, labels)[0]
    tiles = auc_interval(auc, int(np.sum(labels == 0)), int(np.sum(labels == 1)))
    assert first.groups == 20 and first.design_effect > 2 and _width(first.interval) > 1.4 * _width(tiles)
    assert first.interval[0] < tiles[0] < auc < tiles[1] <= first.interval[1]
    two_seeds = group_class_auc_intervals([probabilities] * 2, [labels] * 2, [np.arange(300)] * 2, groups)[0]
    assert two_seeds.interval == pytest.approx(first.interval)  # seeds agreeing are one seed
    alone = group_class_auc_intervals([probabilities], [labels], [np.arange(300)], ["one slide"] * 300)
    assert [found.interval for found in alone] == [None, None]  # one group: no spread to see
    perfect = np.eye(2)[labels]
    low, high = group_class_auc_intervals([perfect], [labels], [np.arange(300)], groups)[0].interval
    assert high == 1.0 and low < 1.0  # told apart on every tile: not [1, 1]
