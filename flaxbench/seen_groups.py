"""Tiles from patients or slides a run trained on, among tiles it scores later (`evaluate --external`, `predict`).

An "external" test set cut from slides of the run's training patients is not external: the model
has seen those patients' tissue, and its accuracy there flatters it. Where the run's tile ids named
their patient or slide by a known convention (data_pipeline.shared_groups: Kather 2016 slides, TCGA
barcodes), its data.json lists its train and val tiles' groups, and the tiles scored later are
checked by the same convention: names that identify one patient or slide wherever they appear, so
that a match is the same patient, not a cohort's slide number reused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from data_pipeline.duplicates import MAX_EXAMPLES
from data_pipeline.groups import find_group
from flaxbench.inference import TrainedRun, read_data_info


class TrainingGroups(NamedTuple):
    """The patients or slides of some runs' train and val tiles, by one known naming convention."""

    what: str  # e.g. "TCGA patients"
    pattern: str
    names: frozenset[str]


def training_groups(runs: Sequence[TrainedRun]) -> TrainingGroups | None:
    """The groups of the `runs`' train and val tiles, over all of them; None unless every run recorded them by one
    convention (data.json's `shared_groups`)."""
    found = []
    for run in runs:
        record = read_data_info(run.workdir).get("shared_groups")
        if not isinstance(record, dict) or not isinstance(record.get("training_groups"), list):
            return None
        found.append(record)
    if not found or len({(record["what"], record["pattern"]) for record in found}) != 1:
        return None
    names = frozenset(name for record in found for name in record["training_groups"])
    return TrainingGroups(found[0]["what"], found[0]["pattern"], names)


def seen_groups_record(groups: TrainingGroups | None, ids: Sequence[str]) -> dict[str, Any] | None:
    """{"what", "pattern", "tiles", "groups", "examples", "trained_ids"}: the tiles `ids` from the runs' training
    `groups` (None without them): how many, which groups, up to MAX_EXAMPLES of them and their ids."""
    if groups is None:
        return None
    regex = re.compile(groups.pattern)
    trained = [(tile, group) for tile in ids if (group := find_group(tile, regex)) in groups.names]
    return {"what": groups.what, "pattern": groups.pattern, "tiles": len(trained),
            "groups": sorted({group for _, group in trained}),
            "examples": [f"'{tile}' ({group})" for tile, group in trained[:MAX_EXAMPLES]],
            "trained_ids": [tile for tile, _ in trained]}


def seen_groups_warning(record: dict[str, Any] | None, runs: str, consequence: str) -> str | None:
    """A warning line where some tiles come from patients or slides `runs` trained or validated on, ending in
    `consequence`; None where none do."""
    if not record or not record["tiles"]:
        return None
    tiles, groups = record["tiles"], record["groups"]
    return (f"warning: {tiles} of these tiles come from {len(groups)} {record['what']} {runs} trained or validated "
            f"on ({', '.join(groups[:MAX_EXAMPLES])}{', ...' if len(groups) > MAX_EXAMPLES else ''}; e.g. "
            f"{record['examples'][0]}): {consequence}")
