"""spec.data.group_by: whole patients or slides to one split, on real Kather 2016 names and larger made-up sets."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipeline import DataError, load_dataset
from data_pipeline.groups import group_split_indices

from .helpers import write_tiles

PATIENT = r"CRC-Prim-HE-\d+"


def kather(kather_sample, **data):
    """load_dataset on the Kather sample, 16 px, grouped by patient."""
    return load_dataset({"source": f"folder:{kather_sample}", "image_size": 16, "group_by": PATIENT, **data})


def patients(ids):
    """The set of Kather patients among tile ids."""
    import re

    return {re.search(PATIENT, tile_id).group(0) for tile_id in ids}


def test_kather_patients_stay_in_one_split(kather_sample):
    data = kather(kather_sample, classes=("tumor", "stroma", "complex"), split=(0.5, 0.25, 0.25))
    splits = {"train": data.train, "val": data.val, "test": data.test}
    for name, split in splits.items():
        assert set(data.groups[name]) == patients(split.ids)
        assert sorted(set(split.labels.tolist())) == [0, 1, 2]  # every class in every split
    assert not patients(data.train.ids) & patients(data.val.ids)
    assert not patients(data.train.ids) & patients(data.test.ids) and not patients(data.val.ids) & patients(data.test.ids)
    assert sum(len(s.ids) for s in splits.values()) == 9
    again = kather(kather_sample, classes=("tumor", "stroma", "complex"), split=(0.5, 0.25, 0.25))
    assert again.groups == data.groups and again.test.ids == data.test.ids


def test_a_class_from_too_few_patients_is_named(kather_sample):
    with pytest.raises(DataError, match=r"class 'empty' comes from 1 group\(s\) \(CRC-Prim-HE-06\)"):
        kather(kather_sample, classes=None, split=(0.5, 0.25, 0.25))


@pytest.mark.parametrize("pattern, message", [
    (r"Patient(\d+)", "finds no group in tile '01_TUMOR/"),
    (r"CRC-(X)?Prim", "finds no group in tile"),  # an optional group that takes no part
    ("([", "is not a valid regular expression"),
    ("", "must be a regular expression or None"),
])
def test_bad_group_patterns_are_one_clear_error(kather_sample, pattern, message):
    with pytest.raises(DataError, match=message):
        kather(kather_sample, classes=("tumor", "stroma"), split=(0.5, 0.5, 0.0), group_by=pattern)


def made_up(groups: int, seed: int = 0) -> tuple[np.ndarray, list[str], list[str]]:
    """Labels, ids and groups of tiles from `groups` patients of uneven size, each with tiles of all 4 classes."""
    rng = np.random.default_rng(seed)
    labels, ids, names = [], [], []
    for g in range(groups):
        for k in range(int(rng.integers(4, 40))):
            labels.append(k % 4)
            ids.append(f"c{k % 4}/patient{g:03d}_{k}.png")
            names.append(f"patient{g:03d}")
    return np.asarray(labels), ids, names


def test_split_sizes_land_near_their_targets():
    labels, ids, names = made_up(60)
    parts = group_split_indices(labels, ids, names, ("a", "b", "c", "d"), (0.6, 0.2, 0.2), 0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(ids)))  # fractions summing to 1: every tile
    largest = max(names.count(g) for g in set(names))
    for part, fraction in zip(parts, (0.6, 0.2, 0.2)):
        assert abs(len(part) - fraction * len(ids)) <= largest
    shared = [set(np.asarray(names)[a]) & set(np.asarray(names)[b]) for a, b in ((0, 1), (0, 2), (1, 2))
              for a, b in [(parts[a], parts[b])]]
    assert not any(shared)
    other_seed = group_split_indices(labels, ids, names, ("a", "b", "c", "d"), (0.6, 0.2, 0.2), 1)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other_seed))


def test_counts_below_the_tile_total_leave_whole_groups_out():
    labels, ids, names = made_up(60)
    parts = group_split_indices(labels, ids, names, ("a", "b", "c", "d"), (400, 100, 100), 0)
    largest = max(names.count(g) for g in set(names))
    for part, count in zip(parts, (400, 100, 100)):
        assert abs(len(part) - count) <= largest
    left_out = set(range(len(ids))) - set(np.concatenate(parts).tolist())
    kept_groups = {names[i] for part in parts for i in part}
    assert left_out and not {names[i] for i in left_out} & kept_groups  # only whole groups are left out


def test_split_folders_may_not_share_a_patient(tmp_path):
    write_tiles(tmp_path / "train" / "a", {"p1": 2, "p2": 2})  # ids train/a/p1/tile_k.png
    write_tiles(tmp_path / "train" / "b", {"p3": 2, "p4": 2})
    write_tiles(tmp_path / "test" / "a", {"p5": 2})
    write_tiles(tmp_path / "test" / "b", {"p1": 2})
    spec = {"source": f"folder:{tmp_path}", "classes": None, "group_by": r"/(p\d+)/", "split": ("train", 2, "test")}
    with pytest.raises(DataError, match="group 'p1' .* has tiles in both the (train|val) and the test split"):
        load_dataset(spec)
    (tmp_path / "test" / "b" / "p1").rename(tmp_path / "test" / "b" / "p6")
    data = load_dataset(spec)
    assert data.groups["test"] == ("p5", "p6")
    assert not set(data.groups["train"]) & set(data.groups["val"])  # val held out of train/ by whole patients
    assert len(data.val.ids) == 4 and set(data.val.labels.tolist()) == {0, 1}
