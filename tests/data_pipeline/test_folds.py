"""spec.data.cv_folds / cv_fold: K-fold cross-validation splits, on the real sample tiles and made-up labels."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from data_pipeline import DataError, load_dataset
from data_pipeline.folds import fold_indices, group_fold_indices

PATIENT = r"CRC-Prim-HE-\d+"


def nct(nct_sample, **data):
    """load_dataset on the NCT-CRC-HE sample (9 classes of 12 tiles), 8 px, test split decoded."""
    return load_dataset({"source": f"folder:{nct_sample}", "classes": None, "image_size": 8, **data}, decode=("test",))


def test_every_tile_is_tested_once_validated_once_and_never_trained_on_where_tested(nct_sample):
    folds = [nct(nct_sample, cv_folds=5, cv_fold=k) for k in range(5)]
    tested = collections.Counter(tile for data in folds for tile in data.test.ids)
    assert len(tested) == 108 and set(tested.values()) == {1}
    for k, data in enumerate(folds):
        train, val, test = set(data.train.ids), set(data.val.ids), set(data.test.ids)
        assert not train & val and not train & test and not val & test
        assert len(train | val | test) == 108
        assert data.val.ids == folds[(k + 1) % 5].test.ids  # validation is the next fold
        assert data.fold == (k, 5)
        assert sorted(set(data.test.labels.tolist())) == list(range(9))  # every class in every fold
        assert data.test.images.shape == (len(data.test.ids), 8, 8, 3)
    sizes = [len(data.test.ids) for data in folds]
    assert sum(sizes) == 108 and max(sizes) - min(sizes) <= 1


def test_folds_are_stratified_balanced_and_follow_the_split_seed():
    labels = np.repeat(np.arange(4), [10, 7, 23, 5])
    ids = [f"c{label}/t{i:03d}" for i, label in enumerate(labels)]
    names = ("a", "b", "c", "d")
    tests = [fold_indices(labels, ids, names, 4, k, seed=3)[2] for k in range(4)]
    for c, size in enumerate((10, 7, 23, 5)):
        per_fold = [int((labels[test] == c).sum()) for test in tests]
        assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == size
    totals = [len(test) for test in tests]
    assert max(totals) - min(totals) <= 1
    order = np.random.default_rng(0).permutation(len(ids))  # the tiles listed in another order: the same folds
    listed = [ids[i] for i in order]
    again = [[listed[i] for i in fold_indices(labels[order], listed, names, 4, k, seed=3)[2]] for k in range(4)]
    assert again == [[ids[i] for i in test] for test in tests]
    other_seed = fold_indices(labels, ids, names, 4, 0, seed=4)[2]
    assert not np.array_equal(other_seed, tests[0])


def test_whole_patients_stay_in_one_fold(kather_sample):
    folds = [load_dataset({"source": f"folder:{kather_sample}", "image_size": 8, "group_by": PATIENT,
                           "classes": ("tumor", "stroma", "complex"), "cv_folds": 3, "cv_fold": k}, decode=("test",))
             for k in range(3)]
    tested = [set(data.groups["test"]) for data in folds]
    assert not tested[0] & tested[1] and not tested[0] & tested[2] and not tested[1] & tested[2]
    assert sum(len(data.test.ids) for data in folds) == 9
    for data in folds:
        assert not set(data.groups["train"]) & set(data.groups["test"])


def test_too_few_groups_or_tiles_for_the_folds_are_named():
    labels = np.array([0, 0, 0, 1, 1, 1])
    ids = [f"p{i % 2}/t{i}" for i in range(6)]
    with pytest.raises(DataError, match=r"finds 2 group\(s\), too few for 3 folds"):
        group_fold_indices(labels, ids, [tile.split("/")[0] for tile in ids], ("a", "b"), 3, 0, 0)
    with pytest.raises(DataError, match=r"class 'b' has 3 tile\(s\), too few for 4-fold cross-validation"):
        fold_indices(np.array([0, 0, 0, 0, 1, 1, 1]), [str(i) for i in range(7)], ("a", "b"), 4, 0, 0)


@pytest.mark.parametrize("data, message", [
    ({"cv_folds": 5}, r"spec.data.cv_folds=5 needs spec.data.cv_fold, the fold \(0 to 4\)"),
    ({"cv_fold": 1}, "spec.data.cv_fold=1 needs spec.data.cv_folds"),
    ({"cv_folds": 2, "cv_fold": 0}, "spec.data.cv_folds must be an integer of at least 3"),
    ({"cv_folds": 5, "cv_fold": 5}, r"spec.data.cv_fold must be an integer from 0 to 4 \(spec.data.cv_folds=5\)"),
    ({"cv_folds": 13, "cv_fold": 0}, "class 'adi' has 12 tile"),
    ({"cv_folds": 3, "cv_fold": 0, "split": ("train", 0.1, "test")}, "names splits of the source"),
])
def test_bad_cross_validation_keys_are_one_clear_error(nct_sample, data, message):
    with pytest.raises(DataError, match=message):
        nct(nct_sample, **data)
