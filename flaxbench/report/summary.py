"""Turn grouped runs into report rows: seed means, confidence intervals, and paired comparisons with the best row."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, NamedTuple

import numpy as np

from flaxbench import metrics
from flaxbench.class_intervals import CI_LEVEL, paired_difference_interval
from flaxbench.group_intervals import GroupComparison, GroupInterval, group_paired_comparison, recorded_groups
from flaxbench.report.collect import RunGroup
from flaxbench.report.copies import (
    accuracy_without_copies_pct, copies_label, shared_group_tiles, shared_groups_label, tile_copies,
)
from flaxbench.report.external import external_lines
from flaxbench.report.pooled import (
    accuracy_ci_pct, balanced_accuracy_ci, group_accuracy_ci, group_balanced_accuracy_ci, group_macro_auc_ci,
    macro_auc_ci, per_class, row_group_pattern, seed_shares, tile_outcomes,
)
from flaxbench.report.settings import row_settings

# Row fields that are the plain mean over a row's seeds of the results.json field of that name.
MEAN_FIELDS = (
    "test_loss",
    "train_time_s",
    "accuracy_per_second",
    "loss_per_second",
    "layers",
    "params",
    "flops_per_image",
    "images_per_second",
    "compile_time_s",
    "macro_f1",
    "balanced_accuracy",
    "macro_auc",
    "ece",
    "ece_temperature_scaled",
    "temperature",
    "test_loss_temperature_scaled",
)

BEST_ROW_NOTE = "best row"
SYNTHETIC_BANNER = "SYNTHETIC DATA — not a histology result"


@dataclass(frozen=True)
class Summary:
    """The report's rows (best first) and what the whole report must say about them."""

    rows: list[dict[str, Any]]
    groups: list[RunGroup]  # same order as rows
    best: str  # name of the row with the highest mean test accuracy
    synthetic: bool  # True when any row was trained/evaluated on synthetic data
    test_sets: int  # distinct (classes, test tiles) among the rows that recorded their predictions
    devices: tuple[str, ...]  # distinct devices the runs were timed on (summary.trained_on), sorted
    external: list[dict[str, Any]]  # the runs' external evaluations (report/external.py), in row order
    settings: list[dict[str, Any] | None]  # how each row was trained (report/settings.py), same order as rows
    per_class: list[dict[str, dict[str, Any]] | None]  # each row's `per_class` table, same order as rows
    unfinished: tuple[str, ...] = ()  # run directories without results.json (collect.find_unfinished_runs)
    failed: tuple[tuple[str, str], ...] = ()  # (run directory, error) of the unfinished runs a study saw fail


def is_synthetic(results: dict[str, Any]) -> bool:
    """Whether a run used synthetic data (the `synthetic` flag, else source == 'synthetic')."""
    return bool(results.get("synthetic", results.get("source") == "synthetic"))


def data_label(results: dict[str, Any]) -> str:
    """The row's data source for the `data` column; always says 'synthetic' for synthetic runs, and any group split."""
    source = results.get("source") or "unknown"
    if is_synthetic(results) and "synthetic" not in source:
        source = f"synthetic ({source})"
    if results.get("group_by"):
        groups = results.get("groups_per_split") or {}
        counts = "/".join(str(groups[k]) for k in ("train", "val", "test") if k in groups)
        source += f"; whole groups by `{results['group_by']}`" + (f" ({counts} train/val/test)" if counts else "")
    return source


def recorded(group: RunGroup, key: str) -> list[str]:
    """The distinct values of a results.json string field over a row's runs, in seed order; absent ones left out."""
    return list(dict.fromkeys(value for run in group.runs if (value := run.results.get(key))))


def trained_on(group: RunGroup) -> list[str]:
    """The distinct devices a row's runs trained on, in seed order: each start's where a run was resumed
    (results.json's `device_starts`), else the run's `device`."""
    found = []
    for run in group.runs:
        starts = run.results.get("device_starts")
        if isinstance(starts, list):
            found += [start.get("device") for start in starts if isinstance(start, dict)]
        found.append(run.results.get("device"))
    return list(dict.fromkeys(device for device in found if isinstance(device, str) and device))


def _run_value(results: dict[str, Any], key: str) -> float | None:
    """A run's numeric field; macro-F1 / balanced accuracy fall back to its confusion matrix."""
    value = results.get(key)
    if value is None and key in ("macro_f1", "balanced_accuracy") and results.get("confusion_matrix"):
        cm = np.asarray(results["confusion_matrix"], dtype=np.int64)
        value = metrics.macro_f1(cm) if key == "macro_f1" else metrics.balanced_accuracy(cm)
    return value


def _mean(values: list[float]) -> float | None:
    """Mean of the values that are present; None when none are (rendered as n/a).

    Identical integers (params, layers of one architecture over seeds) stay integers.
    """
    if not values:
        return None
    if all(isinstance(v, int) for v in values) and len(set(values)) == 1:
        return values[0]
    return float(statistics.fmean(values))


def mean_history(group: RunGroup, key: str) -> tuple[list[int], list[float]] | None:
    """(epochs, mean over seeds of history[key]) over the epochs every seed logged; None if none."""
    per_run = []
    for run in group.runs:
        history = run.results.get("history") or []
        per_run.append({e["epoch"]: e[key] for e in history if e.get(key) is not None})
    epochs = sorted(set.intersection(*(set(values) for values in per_run)))
    if not epochs:
        return None
    return epochs, [statistics.fmean(values[e] for values in per_run) for e in epochs]


def test_set(group: RunGroup) -> tuple[tuple[str, ...], frozenset[str]] | None:
    """(classes, test tile ids) of a row's lowest-seed run (all its folds); None without per-tile test predictions."""
    outcomes = tile_outcomes(group.first_seed_runs)
    if outcomes is None:
        return None
    # Outcomes (right or wrong per tile) do not depend on the label order, only on the class set.
    return tuple(sorted(group.runs[0].results.get("classes") or ())), frozenset(outcomes)


class PairedComparison(NamedTuple):
    """A row against the best row, tile by tile (each tile's share of the row's seeds right on it); None where not
    paired."""

    p_value: float | None  # exact McNemar test; with several seeds its sign-flip generalisation (paired_p_value)
    shared_tiles: int | None
    note: str | None  # why nothing was paired, or BEST_ROW_NOTE
    difference_pct: float | None = None  # accuracy minus the best row's, in percentage points
    difference_ci_pct: tuple[float, float] | None = None  # its 95% CI (class_intervals.paired_difference_interval)
    # the same difference with the tiles' patients or slides as the units, where both rows were split by them
    over_groups: GroupComparison | None = None


def compare_with_best(group: RunGroup, best: RunGroup) -> PairedComparison:
    """The row against the best row on the same tiles: the p-value and the paired accuracy difference.

    Each tile's outcome is the share of the row's seeds right on it (1 or 0 with one seed), so the difference is
    that of the rows' mean accuracies over their seeds, whose sign agrees with the ranking. Only rows tested on the
    best row's classes and exactly its test tiles are paired; the note says why the comparison is missing otherwise.
    """
    if group is best:
        return PairedComparison(None, None, BEST_ROW_NOTE)
    ours, theirs = seed_shares(group), seed_shares(best)
    for name, outcomes in ((group.name, ours), (best.name, theirs)):
        if outcomes is None:
            return PairedComparison(None, None, f"results.json of '{name}' has no per-tile test predictions to pair")
    (our_classes, our_tiles), (best_classes, best_tiles) = test_set(group), test_set(best)
    if our_classes != best_classes:
        return PairedComparison(None, None, (
            f"'{group.name}' was trained on other classes than the best row '{best.name}', so its "
            "test tiles cannot be paired"
        ))
    if our_tiles != best_tiles:
        return PairedComparison(None, len(our_tiles & best_tiles), (
            f"'{group.name}' was tested on other tiles than the best row '{best.name}' "
            f"({len(our_tiles & best_tiles)} of {len(best_tiles)} shared; another split?), and a paired "
            "test needs the same test set"
        ))
    (shares, seeds), (best_shares, best_seeds) = ours, theirs
    if set(shares) != our_tiles or set(best_shares) != best_tiles:
        return PairedComparison(None, None, (
            f"the seeds of '{group.name}' or of the best row '{best.name}' were tested on different tiles, so "
            "their outcomes cannot be paired tile by tile"))
    shared = sorted(best_tiles)
    right, best_right = np.array([shares[t] for t in shared]), np.array([best_shares[t] for t in shared])
    low, high = paired_difference_interval(right, best_right, CI_LEVEL)
    return PairedComparison(metrics.paired_p_value(right, best_right, seeds, best_seeds), len(shared), None,
                            100.0 * float(np.mean(right) - np.mean(best_right)), (100.0 * low, 100.0 * high),
                            _compare_over_groups(group, best, shared, right, best_right))


def _compare_over_groups(group: RunGroup, best: RunGroup, tiles: list[str], right: np.ndarray,
                         best_right: np.ndarray) -> GroupComparison | None:
    """group_paired_comparison of the two rows' outcomes on `tiles`, where both rows grouped them by one pattern
    (row_group_pattern); None otherwise."""
    pattern = row_group_pattern(group)
    groups = recorded_groups(tiles, pattern) if pattern == row_group_pattern(best) else None
    return None if groups is None else group_paired_comparison(right, best_right, groups)


def _over_groups(name: str, found: GroupInterval | None) -> dict[str, float | None]:
    """{"<name>_group_ci95_low", "<name>_group_ci95_high"} of an interval over groups, None where there is none."""
    interval = found.interval if found else None
    return {f"{name}_group_ci95_low": interval[0] if interval else None,
            f"{name}_group_ci95_high": interval[1] if interval else None}


def _row(group: RunGroup, best: RunGroup) -> dict[str, Any]:
    """One machine-readable report row (numbers unformatted, None for n/a)."""
    accuracies = [100.0 * run.results["test_accuracy"] for run in group.runs]
    ci, balanced_ci, auc_ci = accuracy_ci_pct(group), balanced_accuracy_ci(group), macro_auc_ci(group)
    paired = compare_with_best(group, best)
    over_groups = paired.over_groups
    over_groups_ci = over_groups is not None and over_groups.interval is not None
    devices = trained_on(group)
    first = group.runs[0].results
    row: dict[str, Any] = {"name": group.name, "title": group.title, "test_accuracy_pct": statistics.fmean(accuracies)}
    for key in MEAN_FIELDS:
        row[key] = _mean([v for run in group.runs if (v := _run_value(run.results, key)) is not None])
    by_group = group_accuracy_ci(group)
    group_ci = by_group.interval if by_group else None
    row.update(
        test_accuracy_ci95_low_pct=ci[0] if ci else None,
        test_accuracy_ci95_high_pct=ci[1] if ci else None,
        # over the test tiles' patients or slides (row_group_pattern): None where the tiles name none, and the
        # interval and design effect None with fewer than group_intervals.MIN_GROUPS of them
        test_groups=by_group.groups if by_group else None,
        test_accuracy_group_ci95_low_pct=100.0 * group_ci[0] if group_ci else None,
        test_accuracy_group_ci95_high_pct=100.0 * group_ci[1] if group_ci else None,
        test_groups_design_effect=by_group.design_effect if by_group else None,
        balanced_accuracy_ci95_low=balanced_ci[0] if balanced_ci else None,
        balanced_accuracy_ci95_high=balanced_ci[1] if balanced_ci else None,
        macro_auc_ci95_low=auc_ci[0] if auc_ci else None,
        macro_auc_ci95_high=auc_ci[1] if auc_ci else None,
        # both widened for the test tiles' patients or slides (group_design_effects; None as the accuracy's)
        **_over_groups("balanced_accuracy", group_balanced_accuracy_ci(group, balanced_ci)),
        **_over_groups("macro_auc", group_macro_auc_ci(group, auc_ci)),
        seeds=len({run.seed for run in group.runs}),
        # K of a K-fold cross-validated row, and how many of its folds have finished runs
        cv_folds=group.folds,
        cv_folds_run=len({run.fold for run in group.runs}) if group.folds else None,
        # runs whose compile_time_s is partly loading programs from the persistent compilation cache
        compile_cache_runs=sum(1 for run in group.runs if run.results.get("compile_cache_hits")),
        test_accuracy_std_pct=statistics.stdev(accuracies) if len(accuracies) > 1 else None,
        mcnemar_p_vs_best=paired.p_value,
        mcnemar_p_holm=None,  # set once every row's p-value is known (summarize)
        accuracy_vs_best_pct=paired.difference_pct,
        accuracy_vs_best_ci95_low_pct=paired.difference_ci_pct[0] if paired.difference_ci_pct else None,
        accuracy_vs_best_ci95_high_pct=paired.difference_ci_pct[1] if paired.difference_ci_pct else None,
        # the same over the test groups (None unless both rows were split by one group_by), its p-value and Holm's
        accuracy_vs_best_group_ci95_low_pct=100.0 * over_groups.interval[0] if over_groups_ci else None,
        accuracy_vs_best_group_ci95_high_pct=100.0 * over_groups.interval[1] if over_groups_ci else None,
        p_vs_best_groups=over_groups.p_value if over_groups else None,
        p_vs_best_groups_holm=None,  # set once every row's p-value is known (summarize)
        data=data_label(first) + copies_label(copies := tile_copies(group),
                                               without := accuracy_without_copies_pct(group))
        + shared_groups_label(shared := shared_group_tiles(group)),
        # without group_by: test tiles whose patient or slide (a known naming convention) training held too (None:
        # not looked for or not found)
        test_tiles_in_training_groups=shared.shared_tiles if shared else None,
        # test tiles pixel-identical to a train/val tile, and identical tile sets under two labels (None: not looked),
        # and the mean test accuracy without those tiles (None where there are none)
        test_tile_copies=copies.exact if copies else None,
        test_tile_near_copies=copies.near if copies else None,
        label_conflicts=copies.label_conflicts if copies else None,
        near_copy_label_conflicts=copies.near_label_conflicts if copies and copies.near is not None else None,
        test_accuracy_without_copies_pct=without,
        # where the weights started (a title says it only where its spec put '{init}' in it)
        init=init_label(first.get("init")),
        # a row's seeds may have run on different machines: every one is named, and its times mix them
        device="; ".join(devices) or None,
        dtype="; ".join(recorded(group, "dtype")) or None,
        mixed_devices=len(devices) > 1,
        synthetic=is_synthetic(first),
        mcnemar_shared_tiles=paired.shared_tiles,
        mcnemar_note=paired.note,
        seed_values=[run.seed for run in group.runs],
        results_files=[str(run.path) for run in group.runs],
    )
    return row


def any_split_by_group(rows: list[dict[str, Any]]) -> bool:
    """Whether any report row's test tiles are grouped by patient or slide (spec.data.group_by, or a naming
    convention their ids follow)."""
    return any(row["test_groups"] is not None for row in rows)


def init_label(init: str | None) -> str | None:
    """spec.model.init for a table: 'torchvision:/x.pth' -> 'torchvision'; a checkpoint keeps its folder's name.

    'checkpoint:runs/resnet18_nct' -> 'checkpoint:resnet18_nct' (a run fine-tuned from another, or a
    converted model); 'checkpoint:runs/r/checkpoints/last' -> 'checkpoint:r/last'.
    """
    if not init:
        return None
    kind, _, path = str(init).partition(":")
    if kind != "checkpoint" or not path:
        return kind
    parts = PurePath(path.rstrip("/\\")).parts
    if len(parts) >= 3 and parts[-2] == "checkpoints" and parts[-1] in ("best", "last"):
        name = parts[-3] + ("/last" if parts[-1] == "last" else "")
    elif len(parts) >= 2 and parts[-1] == "checkpoints":
        name = parts[-2]
    else:
        name = parts[-1] if parts else path
    return f"checkpoint:{name}"


def summarize(groups: list[RunGroup]) -> Summary:
    """Rows sorted by mean test accuracy (best first, ties by name), each compared with the best."""
    ordered = sorted(groups, key=lambda g: (-statistics.fmean(r.results["test_accuracy"] for r in g.runs), g.name))
    best = ordered[0]
    rows = [_row(group, best) for group in ordered]
    # The rows' tests against the best row are one family: Holm keeps its family-wise error rate.
    for row, adjusted in zip(rows, metrics.holm_adjusted([row["mcnemar_p_vs_best"] for row in rows])):
        row["mcnemar_p_holm"] = adjusted
    for row, adjusted in zip(rows, metrics.holm_adjusted([row["p_vs_best_groups"] for row in rows])):
        row["p_vs_best_groups_holm"] = adjusted
    titles = [row["title"] for row in rows]
    for row in rows:  # figures label rows by title: rows that share one also show their name
        title = row["title"] if titles.count(row["title"]) == 1 else f"{row['title']} ({row['name']})"
        row["run_label"] = title  # one run's, for the lines of one seed
        row["label"] = title if row["seeds"] == 1 else f"{title} ({row['seeds']} seeds)"
    return Summary(
        rows=rows,
        groups=ordered,
        best=best.name,
        synthetic=any(is_synthetic(run.results) for group in groups for run in group.runs),
        test_sets=len({found for group in ordered if (found := test_set(group)) is not None}),
        devices=tuple(sorted({device for group in ordered for device in trained_on(group)})),
        external=external_lines(rows, ordered),
        settings=[row_settings(group) for group in ordered],
        per_class=[per_class(group) for group in ordered],
    )
