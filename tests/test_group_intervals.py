"""The accuracy's 95% CI over patients or slides: the Wilson interval of the tiles a design effect leaves."""

from statistics import NormalDist

import numpy as np
import pytest
from scipy.stats import t as student_t

from flaxbench.class_intervals import accuracy_interval, class_cis, paired_difference_interval, wilson_interval
from flaxbench.evaluation import format_metrics
from flaxbench import metrics
from flaxbench.group_intervals import (
    MIN_GROUPS, GroupInterval, format_group_interval, group_accuracy_interval, group_class_intervals, group_pattern,
    group_paired_comparison, predictions_group_interval, tile_group_interval,
)
from tests.helpers import pooled_predictions


def _width(interval: tuple[float, float]) -> float:
    return interval[1] - interval[0]


def test_groups_right_or_wrong_as_a_whole_widen_the_interval_far_beyond_the_tiles_one():
    # 20 patients of 30 tiles, every tile of half of them right and of the others wrong
    groups = np.repeat([f"patient_{k}" for k in range(20)], 30)
    correct = np.repeat(np.arange(20) % 2 == 0, 30)
    found = group_accuracy_interval(correct, None, groups)
    tiles = accuracy_interval(correct)
    assert found.groups == 20
    low, high = found.interval
    assert low < 0.5 < high and _width(found.interval) > 3 * _width(tiles)  # 600 tiles, but only 20 samples
    assert 0.2 < low < 0.4 and 0.6 < high < 0.8


def test_one_tile_per_group_gives_about_the_tile_level_interval():
    rng = np.random.default_rng(0)
    correct = rng.random(400) < 0.8
    found = group_accuracy_interval(correct, None, [f"g{k}" for k in range(400)])
    assert found.groups == 400
    assert np.allclose(found.interval, accuracy_interval(correct), atol=0.015)


def test_groups_as_alike_as_independent_tiles_only_pay_for_their_few_degrees_of_freedom():
    # every patient 8 of 10 tiles right: less spread than independent tiles would show, design effect 1
    correct = np.tile(np.r_[np.ones(8), np.zeros(2)], 12)
    found = group_accuracy_interval(correct, None, np.repeat([f"p{k}" for k in range(12)], 10))
    assert found.design_effect == 1.0
    z, t = NormalDist().inv_cdf(0.975), student_t.ppf(0.975, 11)
    assert np.allclose(found.interval, wilson_interval(0.8, 120 * (z / t) ** 2))
    tiles = accuracy_interval(correct)
    assert found.interval[0] < tiles[0] and found.interval[1] > tiles[1]  # never narrower than the tile-level CI


def test_a_large_group_weighs_as_much_as_its_tiles():
    # one slide of 90 tiles all right, nine slides of one wrong tile each: 90 of 99 right, but from 10 slides
    correct = np.r_[np.ones(90), np.zeros(9)]
    found = group_accuracy_interval(correct, None, ["big"] * 90 + [f"small_{k}" for k in range(9)])
    assert found.design_effect > 5
    low, high = found.interval
    assert low < 90 / 99 < high and low < 0.75 < accuracy_interval(correct)[0]


def test_seeds_on_a_tile_count_as_its_trials_not_as_more_groups():
    rng = np.random.default_rng(1)
    groups = np.repeat([f"slide_{k}" for k in range(12)], 10)
    correct_once = (rng.random(120) < 0.7).astype(float)
    one_seed = group_accuracy_interval(correct_once, None, groups)
    three_seeds_agreeing = group_accuracy_interval(3 * correct_once, np.full(120, 3.0), groups)
    assert three_seeds_agreeing.groups == one_seed.groups
    assert np.allclose(three_seeds_agreeing.interval, one_seed.interval)


def test_one_group_gives_no_interval_but_every_tile_right_over_several_still_gives_one():
    assert MIN_GROUPS == 2
    found = group_accuracy_interval(np.ones(30), None, ["p0"] * 30)
    assert found == GroupInterval(1, None)
    assert format_group_interval(found) == "; 1 group, too few for a CI over groups (at least 2)"
    three = group_accuracy_interval(np.ones(30), None, np.repeat(["p0", "p1", "p2"], 10))
    assert three.interval[1] == 1.0 and three.interval[0] < accuracy_interval(np.ones(30))[0] < 1.0


def test_the_interval_holds_the_estimate():
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 30, 300).astype(str)
    correct = rng.random(300) < 0.6
    found = group_accuracy_interval(correct, None, groups)
    assert found.interval[0] < correct.mean() < found.interval[1]


def test_tiles_are_grouped_by_the_runs_pattern():
    ids = [f"tumor/slide_{k % 12}/tile_{k}.png" for k in range(120)]
    correct = np.arange(120) % 12 < 9  # by slide: 9 slides all right, 3 all wrong
    found = tile_group_interval(correct, None, ids, r"slide_(\d+)")
    assert found.groups == 12 and found.interval[0] < 0.75 < found.interval[1]
    assert tile_group_interval(correct, None, ids, None) is None  # split tile by tile: no groups
    assert tile_group_interval(correct, None, ids, r"patient_(\d+)") is None  # tiles the pattern finds no group in
    predictions = {"ids": ids, "labels": [0] * 120, "predictions": [0 if right else 1 for right in correct]}
    assert predictions_group_interval(predictions, r"slide_(\d+)") == found


def test_the_metrics_line_shows_the_interval_over_groups():
    metrics = {"accuracy": 0.75, "loss": 0.5, "macro_f1": 0.7, "balanced_accuracy": 0.74, "accuracy_ci": [0.66, 0.82]}
    line = format_metrics("run", "test", {**metrics, "groups": 12, "accuracy_ci_groups": [0.5, 0.917]})
    assert "accuracy 75.00% (95% CI 66.0-82.0%; 50.0-91.7% over 12 groups)" in line
    assert "(95% CI 66.0-82.0%)" in format_metrics("run", "test", {**metrics, "groups": None})
    assert "3 groups, too few" in format_metrics("run", "test", {**metrics, "groups": 3, "accuracy_ci_groups": None})


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="a group per tile"):
        group_accuracy_interval(np.ones(3), None, ["a", "b"])


def test_a_difference_carried_by_a_few_patients_is_no_longer_significant_over_patients():
    # 600 tiles of 20 patients; A beats B on every tile of 3 patients and ties elsewhere
    groups = np.repeat([f"patient_{k}" for k in range(20)], 30)
    right_b = np.zeros(600)
    right_a = np.where(np.isin(groups, ["patient_0", "patient_1", "patient_2"]), 1.0, 0.0)
    assert metrics.mcnemar_p_value(right_a.astype(bool), right_b.astype(bool)) < 1e-20  # 90 tiles to 0
    found = group_paired_comparison(right_a, right_b, groups)
    assert found.groups == 20 and found.difference == pytest.approx(0.15)
    assert found.p_value > 0.05 and found.interval[0] < 0 < found.interval[1]


def test_a_difference_on_every_patient_stays_significant_and_holds_its_estimate():
    rng = np.random.default_rng(3)
    groups = np.repeat([f"slide_{k}" for k in range(15)], 20)
    right_b = rng.random(300) < 0.6
    right_a = right_b | (rng.random(300) < 0.3)  # A right wherever B is, and on more tiles of every slide
    found = group_paired_comparison(right_a, right_b, groups)
    difference = right_a.mean() - right_b.mean()
    assert found.difference == pytest.approx(difference)
    assert found.interval[0] < difference < found.interval[1] and found.interval[0] > 0 and found.p_value < 1e-4


def test_the_variance_over_groups_is_never_below_that_of_independent_tiles():
    # every patient: A right on 2 of its 10 tiles where B is wrong, the same on each: no spread over patients
    groups = np.repeat([f"p{k}" for k in range(12)], 10)
    right_a, right_b = np.tile(np.r_[1, 1, np.zeros(8)], 12), np.zeros(120)
    found = group_paired_comparison(right_a, right_b, groups)
    low, high = paired_difference_interval(right_a > 0, right_b > 0)  # the tile-level interval, stretched by t / z
    factor = student_t.ppf(0.975, 11) / NormalDist().inv_cdf(0.975)
    assert found.interval == pytest.approx((0.2 - factor * (0.2 - low), 0.2 + factor * (high - 0.2)))
    same = group_paired_comparison(right_b, right_b, groups)  # the same outcomes: no difference, yet not [0, 0]
    assert same.p_value == 1.0 and same.interval[0] < 0.0 < same.interval[1]
    assert group_paired_comparison(right_a, right_b, ["p0"] * 120).interval is None  # one group: none


def test_a_classs_recall_over_patients_widens_where_its_patients_are_right_or_wrong_as_a_whole():
    # 12 patients of 20 tumour and 20 stroma tiles; tumour is found on every tile of 6 patients and no tile of the
    # others, stroma on 17 of 20 tiles of every patient
    groups = np.repeat([f"patient_{k}" for k in range(12)], 40)
    labels = np.tile(np.r_[np.zeros(20, int), np.ones(20, int)], 12)
    tumour_found = np.repeat(np.arange(12) < 6, 40)
    stroma_found = np.tile(np.r_[np.zeros(20, bool), np.ones(17, bool), np.zeros(3, bool)], 12)
    predicted = np.where(labels == 0, np.where(tumour_found, 0, 1), np.where(stroma_found, 1, 0))
    found = group_class_intervals(*pooled_predictions(labels, [predicted], 2), groups)
    tiles = class_cis(*pooled_predictions(labels, [predicted], 2))
    tumour, stroma = found["recall"]
    assert tumour.groups == stroma.groups == 12
    assert _width(tumour.interval) > 3 * _width(tiles["recall"][0]) and tumour.interval[0] < 0.5 < tumour.interval[1]
    assert stroma.design_effect == 1.0  # no more spread over patients than independent tiles would show
    z, t = NormalDist().inv_cdf(0.975), student_t.ppf(0.975, 11)
    assert np.allclose(stroma.interval, wilson_interval(0.85, 240 * (z / t) ** 2))
    # tumour's misses are stroma's false alarms: the same patients make stroma's precision and specificity spread
    assert found["precision"][1].design_effect > 5 and found["specificity"][1].design_effect > 5
    # and both F1s, each over the patients holding its tiles or tiles called it, about the tile-level ones
    tumour_f1 = found["f1"][0]
    assert tumour_f1.groups == 12 and tumour_f1.design_effect > 5
    assert tumour_f1.interval[0] < tiles["f1"][0][0] and _width(tumour_f1.interval) > 2 * _width(tiles["f1"][0])


def test_one_tile_per_group_gives_about_each_classs_tile_level_intervals():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 600)
    predicted = np.where(rng.random(600) < 0.75, labels, rng.integers(0, 3, 600))
    pooled = pooled_predictions(labels, [predicted], 3)
    found = group_class_intervals(*pooled, [f"g{k}" for k in range(600)])
    tiles = class_cis(*pooled)
    for key in ("recall", "precision", "specificity", "f1"):
        for k in range(3):
            assert found[key][k].interval[0] < found[key][k].interval[1]
            assert np.allclose(found[key][k].interval, tiles[key][k], atol=0.02), (key, k)


def test_class_intervals_pool_seeds_as_trials_and_count_only_the_groups_each_is_over():
    rng = np.random.default_rng(5)
    groups = np.repeat([f"slide_{k}" for k in range(10)], 12)
    labels = np.where(np.arange(120) < 60, 0, np.where(np.arange(120) < 110, 1, 2))  # class 2 on slide 9 only
    seeds = [np.where(rng.random(120) < 0.7, labels, (labels + 1) % 3) for _ in range(3)]
    pooled = pooled_predictions(labels, seeds, 3)
    found = group_class_intervals(*pooled, groups)
    assert [found["recall"][k].groups for k in range(3)] == [5, 5, 1]  # the slides holding each class's tiles
    assert found["recall"][2].interval is None and found["specificity"][2].groups == 10
    # the pooled proportions sit inside their intervals, a tile predicted by some seeds counting as that share
    precision = [pooled[3][labels == k, k].sum() / pooled[3][:, k].sum() for k in range(3)]
    for k in range(2):
        low, high = found["precision"][k].interval
        assert low < precision[k] < high
    agreeing = group_class_intervals(*pooled_predictions(labels, [seeds[0]] * 3, 3), groups)
    alone = group_class_intervals(*pooled_predictions(labels, [seeds[0]], 3), groups)
    assert agreeing == alone


def test_a_runs_group_pattern_is_its_group_by_else_its_tiles_naming_convention():
    shared = {"what": "Kather 2016 slides", "pattern": r"CRC-Prim-HE-\d+"}
    assert group_pattern(r"slide_(\d+)", shared) == r"slide_(\d+)"
    assert group_pattern(None, shared) == r"CRC-Prim-HE-\d+"
    assert group_pattern(None, None) is None
