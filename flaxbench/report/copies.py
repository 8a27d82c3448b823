"""What a report row says of its test tiles that are not held out: tiles that copy, or nearly copy, a training or
validation tile (data_pipeline.duplicates, data_pipeline.near_copies), and tiles of patients or slides training
held too (data_pipeline.shared_groups)."""

from __future__ import annotations

import statistics
from typing import Any, NamedTuple

from flaxbench.evaluation import accuracy_without
from flaxbench.report.collect import RunGroup


class TileCopies(NamedTuple):
    """A row's test tiles that copy a train or val tile, summed over its lowest-seed runs (folds)."""

    exact: int  # pixel-identical
    near: int | None  # near-copies (rotated, flipped, re-saved, recoloured); None where not looked for
    label_conflicts: int  # sets of identical tiles under two labels
    near_label_conflicts: int = 0  # near-copies labelled otherwise than the tile they copy


def tile_copies(group: RunGroup) -> TileCopies | None:
    """The copies a row's lowest-seed runs recorded, summed over folds; None if no run recorded `duplicate_tiles`
    (spec.data.duplicates='off')."""
    records = [found for run in group.first_seed_runs if isinstance(found := run.results.get("duplicate_tiles"), dict)]
    if not records:
        return None
    near_records = [found.get("near_copies") for found in records]
    looked = all(isinstance(found, dict) for found in near_records)  # runs from before near-copies were looked for
    return TileCopies(sum(_test_copies(found) for found in records),
                      sum(_test_copies(found) for found in near_records) if looked else None,
                      _conflicts(records), _conflicts(near_records) if looked else 0)


def _conflicts(records: list[dict]) -> int:
    """The label conflicts `duplicate_tiles` (or `near_copies`) records count, summed."""
    return sum(int(found.get("label_conflicts") or 0) for found in records)


def _test_copies(found: dict) -> int:
    """The test tiles a `duplicate_tiles` (or its `near_copies`) record counts as copies of train or val tiles."""
    return sum(int(found.get("across_splits", {}).get(key) or 0) for key in ("test_in_train", "test_in_val"))


def _copied_test_ids(found: Any) -> set[str]:
    """The ids of the test tiles a run's `duplicate_tiles` names as copies or near-copies."""
    if not isinstance(found, dict):
        return set()
    near = found.get("near_copies") if isinstance(found.get("near_copies"), dict) else {}
    return {tile for record in (found, near) for tile in ((record.get("copied_ids") or {}).get("test") or ())}


def accuracy_without_copies_pct(group: RunGroup) -> float | None:
    """The row's mean test accuracy (%) over its runs, each run's test tiles that copy or nearly copy a train or val
    tile (`duplicate_tiles`' `copied_ids`) left out; None where no run recorded such tiles, or one lacks its
    predictions or has no other test tile."""
    accuracies, any_copies = [], False
    for run in group.runs:
        copied = _copied_test_ids(run.results.get("duplicate_tiles"))
        if not copied:
            accuracies.append(100.0 * run.results["test_accuracy"])
            continue
        predictions = run.results.get("test_predictions")
        if not predictions:
            return None
        any_copies = True
        accuracy = accuracy_without(predictions, copied)
        if accuracy is None:  # every test tile is a copy: no accuracy without them
            return None
        accuracies.append(100.0 * accuracy)
    return statistics.fmean(accuracies) if any_copies else None


def copies_label(copies: TileCopies | None, without: float | None) -> str:
    """What the Data column adds about copied tiles: nothing where none were found or none were looked for."""
    exact, near, conflicts, near_conflicts = copies or (0, 0, 0, 0)
    counted = [f"{exact} test tile{'s' if exact > 1 else ''} copying train/val tiles"] if exact else []
    if near:
        counted.append((f"{near} nearly copying them" if exact else
                        f"{near} test tile{'s' if near > 1 else ''} nearly copying train/val tiles")
                       + " (rotated, flipped, re-saved, resized or recoloured)")
    parts = [" and ".join(counted) + (f" (test accuracy without them {without:.2f}%)" if without is not None else "")
             ] if counted else []
    parts += [f"{conflicts} identical tile set{'s' if conflicts > 1 else ''} under two labels"] if conflicts else []
    if near_conflicts:
        parts.append(f"{near_conflicts} near-cop{'ies' if near_conflicts > 1 else 'y'} under another label")
    return "".join(f"; {part}" for part in parts)


class SharedGroupTiles(NamedTuple):
    """A row's test tiles whose patient or slide its training also held (data_pipeline.shared_groups), summed over its
    lowest-seed runs (folds)."""

    what: str  # e.g. "Kather 2016 slides"
    pattern: str  # the spec.data.group_by that keeps each in one split
    shared_tiles: int
    test_tiles: int
    shared_groups: int | None  # of test_groups; None for several folds, whose groups may repeat
    test_groups: int | None


def shared_group_tiles(group: RunGroup) -> SharedGroupTiles | None:
    """The row's SharedGroupTiles; None where its runs recorded none (ids naming no known patient or slide, or runs
    from before it was looked for)."""
    records = [found for run in group.first_seed_runs if isinstance(found := run.results.get("shared_groups"), dict)]
    if not records or len(records) < len(group.first_seed_runs):
        return None
    one = records[0] if len(records) == 1 else None
    return SharedGroupTiles(records[0]["what"], records[0]["pattern"], sum(int(r["shared_tiles"]) for r in records),
                            sum(int(r["test_tiles"]) for r in records), one and int(one["shared_groups"]),
                            one and int(one["test_groups"]))


def shared_groups_label(shared: SharedGroupTiles | None) -> str:
    """What the Data column adds where test tiles come from patients or slides the row trained on; '' elsewhere."""
    if shared is None or not shared.shared_tiles:
        return ""
    of_groups = "" if shared.shared_groups is None else f"{shared.shared_groups} of the {shared.test_groups} test "
    return (f"; {shared.shared_tiles} of {shared.test_tiles} test tiles come from {of_groups}{shared.what} that "
            f"train/val also hold (group_by `{shared.pattern}` keeps them apart)")
