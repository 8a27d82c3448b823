"""What a report row says of its test tiles that copy a training or validation tile (data_pipeline.duplicates)."""

from __future__ import annotations

import statistics

from flaxbench.evaluation import accuracy_without
from flaxbench.report.collect import RunGroup


def tile_copies(group: RunGroup) -> tuple[int, int] | None:
    """(test tiles pixel-identical to a train or val tile, sets of identical tiles under two labels) of a row's
    lowest-seed runs, summed over folds; None if no run recorded `duplicate_tiles` (spec.data.duplicates='off')."""
    records = [found for run in group.first_seed_runs if isinstance(found := run.results.get("duplicate_tiles"), dict)]
    if not records:
        return None
    copies = sum(int(found.get("across_splits", {}).get(key) or 0) for found in records
                 for key in ("test_in_train", "test_in_val"))
    return copies, sum(int(found.get("label_conflicts") or 0) for found in records)


def accuracy_without_copies_pct(group: RunGroup) -> float | None:
    """The row's mean test accuracy (%) over its runs, each run's test tiles that copy a train or val tile (its
    `duplicate_tiles.copied_ids`) left out; None where no run recorded such tiles, or one lacks its predictions
    or has no other test tile."""
    accuracies, any_copies = [], False
    for run in group.runs:
        found = run.results.get("duplicate_tiles")
        copied = set((found.get("copied_ids") or {}).get("test") or ()) if isinstance(found, dict) else set()
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


def copies_label(copies: tuple[int, int] | None, without: float | None) -> str:
    """What the Data column adds about copied tiles: nothing where none were found or none were looked for."""
    test_copies, conflicts = copies or (0, 0)
    parts = ([f"{test_copies} test tile{'s' if test_copies > 1 else ''} copying train/val tiles"
              + (f" (test accuracy without them {without:.2f}%)" if without is not None else "")] if test_copies
             else []) + ([f"{conflicts} identical tile set{'s' if conflicts > 1 else ''} under two labels"]
                         if conflicts else [])
    return "".join(f"; {part}" for part in parts)
