"""Deterministic stratified splits: counts, fractions, seeds and impossible requests."""

import re

import numpy as np
import pytest

from data_pipeline import DataError
from data_pipeline.split import split_counts, split_indices


def _tiles(sizes):
    """Labels, ids and names for classes of the given sizes; ids are not in label order."""
    labels = np.repeat(np.arange(len(sizes)), sizes).astype(np.int32)
    ids = tuple(f"t{(7 * i) % len(labels):04d}_{label}" for i, label in enumerate(labels))
    names = tuple(f"class{k}" for k in range(len(sizes)))
    return labels, ids, names


def _per_class(labels, parts, num_classes):
    """Tiles per (class, split)."""
    return np.array([[int((labels[p] == c).sum()) for p in parts] for c in range(num_classes)])


def test_study_counts_are_exact_per_class():
    labels, ids, names = _tiles([625] * 6)
    parts = split_indices(labels, ids, names, (2550, 600, 600), seed=0)
    assert [len(p) for p in parts] == [2550, 600, 600]
    np.testing.assert_array_equal(_per_class(labels, parts, 6), [[425, 100, 100]] * 6)
    used = np.concatenate(parts)
    assert len(np.unique(used)) == len(used)  # no tile in two splits


def test_counts_follow_class_proportions_by_largest_remainder():
    labels, ids, names = _tiles([10, 20, 30])
    parts = split_indices(labels, ids, names, (31, 12, 7), seed=1)
    # train quotas 5.17/10.33/15.5 and test quotas 1.17/2.33/3.5: the largest remainder gets the spare tile.
    np.testing.assert_array_equal(_per_class(labels, parts, 3), [[5, 2, 1], [10, 4, 2], [16, 6, 4]])


def test_rounding_never_asks_a_class_for_more_tiles_than_it_has():
    # Quotas are 4/3 everywhere: per split, ties would round class 'a' up three times (6 > 4 tiles).
    counts = split_counts([4, 4, 4], ("a", "b", "c"), (4, 4, 4))
    np.testing.assert_array_equal(counts.sum(axis=0), [4, 4, 4])
    np.testing.assert_array_equal(counts.sum(axis=1), [4, 4, 4])
    assert (counts >= 1).all()


def test_fractions_apply_per_class():
    counts = split_counts([10, 5, 7], ("a", "b", "c"), (0.6, 0.2, 0.2))
    np.testing.assert_array_equal(counts, [[6, 2, 2], [3, 1, 1], [4, 2, 1]])
    thirds = split_counts([3, 3], ("a", "b"), (1 / 3, 1 / 3, 1 / 3))
    np.testing.assert_array_equal(thirds, [[1, 1, 1], [1, 1, 1]])
    train_only = split_counts([4, 5], ("a", "b"), (0.5, 0.0, 0))
    np.testing.assert_array_equal(train_only, [[2, 0, 0], [2, 0, 0]])


def test_same_seed_same_split_other_seed_other_split():
    labels, ids, names = _tiles([40, 40])
    first = split_indices(labels, ids, names, (0.5, 0.25, 0.25), seed=3)
    again = split_indices(labels, ids, names, (0.5, 0.25, 0.25), seed=3)
    other = split_indices(labels, ids, names, (0.5, 0.25, 0.25), seed=4)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(set(a.tolist()) != set(c.tolist()) for a, c in zip(first, other))


def test_split_ignores_input_order_and_sorts_by_id():
    labels, ids, names = _tiles([12, 9])
    order = np.random.default_rng(0).permutation(len(ids))
    shuffled_ids = tuple(ids[i] for i in order)
    parts = split_indices(labels, ids, names, (0.5, 0.25, 0.25), seed=0)
    shuffled_parts = split_indices(labels[order], shuffled_ids, names, (0.5, 0.25, 0.25), seed=0)
    for part, shuffled in zip(parts, shuffled_parts):
        assert [ids[i] for i in part] == [shuffled_ids[i] for i in shuffled]
        assert [ids[i] for i in part] == sorted(ids[i] for i in part)


def test_a_class_split_does_not_depend_on_the_other_classes():
    labels, ids, names = _tiles([20, 30])
    both = split_indices(labels, ids, names, (0.5, 0.25, 0.25), seed=0)
    keep = np.flatnonzero(labels == 1)
    kept_ids = tuple(ids[i] for i in keep)
    alone = split_indices(np.zeros(len(keep), np.int32), kept_ids, names[1:], (0.5, 0.25, 0.25), 0)
    for part, part_alone in zip(both, alone):
        assert [ids[i] for i in part if labels[i] == 1] == [ids[keep[i]] for i in part_alone]


@pytest.mark.parametrize(
    "split, message",
    [
        ((10, 5), "three numbers"),
        ((10, -1, 5), "negative"),
        ((0.8, 0.3, 0.1), "sum to at most 1"),
        ((2550.0, 600, 600), "for tile counts use integers"),
        ((0, 0, 0), "selects no tiles"),
        (("a", 1, 1), "must hold numbers"),
    ],
)
def test_bad_split_values(split, message):
    with pytest.raises(DataError, match=message):
        split_counts([10, 10], ("a", "b"), split)


def test_more_tiles_than_available_is_an_error():
    with pytest.raises(DataError, match=r"asks for 21 tiles but the selected classes have 20"):
        split_counts([10, 10], ("a", "b"), (11, 5, 5))


def test_class_with_too_few_tiles_is_named():
    named = (r"class 'rare' has 2 tiles, too few .* no test tiles \(train 1, val 1, test 0\); "
             r".* every class of 4 tiles or more works")
    with pytest.raises(DataError, match=named):
        split_counts([50, 2], ("common", "rare"), (0.6, 0.2, 0.2))


def test_a_split_asked_for_is_never_left_empty():
    # Three tiles a class: 0.15 of a class rounds to nothing, so test (or val) would be empty overall.
    too_few = r"too few for spec.data.split \(0.7, 0.15, 0.15\).* every class of 5 tiles or more works"
    with pytest.raises(DataError, match=too_few):
        split_counts([3] * 8, tuple("abcdefgh"), (0.7, 0.15, 0.15))


def test_val_and_test_share_tied_tiles():
    # 15 tiles a class at 0.1/0.1: val and test tie at 1.5 in every class; the old rule gave val all 9.
    totals = split_counts([15] * 9, tuple("abcdefghi"), (0.8, 0.1, 0.1)).sum(axis=0)
    assert totals[0] == 108 and totals[1] + totals[2] == 27
    assert min(totals[1], totals[2]) >= 11


def test_counts_below_the_number_of_classes_are_named():
    with pytest.raises(DataError, match=r"gives the train split 1 tile for 2 classes.* at least 2"):
        split_counts([3, 3], ("tumor", "stroma"), (1, 1, 1))


def test_bad_seed():
    labels, ids, names = _tiles([4])
    with pytest.raises(DataError, match="split_seed"):
        split_indices(labels, ids, names, (0.5, 0.25, 0.25), seed=-1)


def test_the_class_size_named_in_the_error_works_for_every_larger_class():
    # Largest remainder is not monotone: with these fractions a class of 9 works but 10 to 12 do not.
    with pytest.raises(DataError, match=r"has 12 tiles, .* every class of (\d+) tiles or more works") as error:
        split_counts([12, 40], ("adi", "b"), (0.8, 0.15, 0.05))
    named = int(re.search(r"every class of (\d+) tiles", str(error.value)).group(1))
    for size in range(named, 200):
        assert (split_counts([size, 40], ("adi", "b"), (0.8, 0.15, 0.05)) > 0).all()


def test_tiles_a_split_leaves_out_are_counted_in_a_warning(caplog):
    labels, ids, names = _tiles([10, 10])
    with caplog.at_level("WARNING"):
        split_indices(labels, ids, names, (0.6, 0.2, 0.2), 0)
    assert not caplog.records
    with caplog.at_level("WARNING"):
        parts = split_indices(labels, ids, names, (0.3, 0.2, 0.2), 0)
    assert sum(map(len, parts)) == 14
    assert "puts 14 of the 20 tiles" in caplog.text and "the other 6 are in none" in caplog.text
