"""Patients or slides that a split puts in training and test alike.

Without `spec.data.group_by` the split is tile by tile (as the reference study's was), so a slide's
tiles land in train, val and test, and the test accuracy is measured on slides the model has seen.
Where every tile id names its patient or slide by a known convention (Kather 2016's file names carry
their slide, `CRC-Prim-HE-07`; TCGA-derived tiles their patient's barcode, `TCGA-AA-3520`), a run
counts the test tiles whose group also has tiles in train or val (with a `group_by` of other groups
too), warns, and records it, so that the report can say it beside the accuracy, and records the
training tiles' groups, so that other tile sets can be checked against them (flaxbench.seen_groups).
These names identify one patient or slide wherever they appear; ids matching none of the
conventions are not checked.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from data_pipeline.groups import find_group

# (what the groups are, a pattern whose match in a tile id names its group), tried in order
KNOWN_GROUP_PATTERNS = (
    ("Kather 2016 slides", r"CRC-Prim-HE-\d+"),
    ("TCGA patients", r"TCGA-\w\w-\w{4}"),
)


@dataclasses.dataclass(frozen=True)
class SharedGroups:
    """The test tiles whose patient or slide also has tiles in train or val, by a known naming convention."""

    what: str  # e.g. "Kather 2016 slides"
    pattern: str  # the spec.data.group_by that would keep each in one split
    test_groups: int  # groups among the test tiles
    shared_groups: int  # of those, groups with tiles in train or val too
    test_tiles: int
    shared_tiles: int  # test tiles of the shared groups
    # the groups of the train and val tiles, sorted, for other tile sets to be checked against
    training_groups: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The counts results.json keeps as `shared_groups` (data.json adds `training_groups`)."""
        return {key: value for key, value in dataclasses.asdict(self).items() if key != "training_groups"}

    def warning(self) -> str:
        """One line saying what is shared and what to do, for a run's log."""
        return (f"{self.shared_groups} of the {self.test_groups} {self.what} of the "
                f"test tiles ({self.shared_tiles} of {self.test_tiles} tiles) also have tiles in train or val: the "
                f"test accuracy is on {self.what} the model trained on, and overstates it on new ones; "
                f"spec.data.group_by='{self.pattern}' keeps each in one split")


def shared_groups(ids_by_split: Mapping[str, Sequence[str]]) -> SharedGroups | None:
    """SharedGroups of the train, val and test tile ids by the first KNOWN_GROUP_PATTERNS convention that names a
    group in every one of them; None where none does, or without test tiles."""
    test = list(ids_by_split.get("test", ()))
    training = [tile for split in ("train", "val") for tile in ids_by_split.get(split, ())]
    if not test:
        return None
    for what, pattern in KNOWN_GROUP_PATTERNS:
        regex = re.compile(pattern)
        test_groups = [find_group(tile, regex) for tile in test]
        training_groups = [find_group(tile, regex) for tile in training]
        if None in test_groups or None in training_groups:
            continue
        seen = set(training_groups)
        shared = {group for group in test_groups if group in seen}
        return SharedGroups(what, pattern, len(set(test_groups)), len(shared), len(test),
                            sum(group in shared for group in test_groups), tuple(sorted(seen)))
    return None
