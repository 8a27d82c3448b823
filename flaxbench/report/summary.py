"""Turn grouped runs into report rows: seed means, bootstrap CIs, and paired comparisons with the best row."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, NamedTuple

import numpy as np

from flaxbench import bootstrap, metrics
from flaxbench.bootstrap import CI_LEVEL, CI_RESAMPLES, CI_SEED
from flaxbench.class_intervals import class_cis, with_class_cis
from flaxbench.report.collect import Run, RunGroup
from flaxbench.report.external import external_lines
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
    devices: tuple[str, ...]  # distinct devices the runs were timed on (results.json's `device`), sorted
    external: list[dict[str, Any]]  # the runs' external evaluations (report/external.py), in row order
    settings: list[dict[str, Any] | None]  # how each row was trained (report/settings.py), same order as rows
    per_class: list[dict[str, dict[str, Any]] | None]  # each row's `per_class` table, same order as rows


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
        kept = [label == predicted for tile, label, predicted
                in zip(predictions["ids"], predictions["labels"], predictions["predictions"]) if tile not in copied]
        if not kept:  # every test tile is a copy: no accuracy without them
            return None
        accuracies.append(100.0 * statistics.fmean(kept))
    return statistics.fmean(accuracies) if any_copies else None


def _copies_label(copies: tuple[int, int] | None, without: float | None) -> str:
    """What the Data column adds about copied tiles: nothing where none were found or none were looked for."""
    test_copies, conflicts = copies or (0, 0)
    parts = ([f"{test_copies} test tile{'s' if test_copies > 1 else ''} copying train/val tiles"
              + (f" (test accuracy without them {without:.2f}%)" if without is not None else "")] if test_copies
             else []) + ([f"{conflicts} identical tile set{'s' if conflicts > 1 else ''} under two labels"]
                         if conflicts else [])
    return "".join(f"; {part}" for part in parts)


def recorded(group: RunGroup, key: str) -> list[str]:
    """The distinct values of a results.json string field over a row's runs, in seed order; absent ones left out."""
    return list(dict.fromkeys(value for run in group.runs if (value := run.results.get(key))))


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


def pooled_confusion_matrix(group: RunGroup) -> np.ndarray | None:
    """Sum of the confusion matrices of a row's seeds; None unless every seed has one."""
    matrices = [run.results.get("confusion_matrix") for run in group.runs]
    if any(cm is None for cm in matrices):
        return None
    return np.sum([np.asarray(cm, dtype=np.int64) for cm in matrices], axis=0)


def per_class(group: RunGroup) -> dict[str, dict[str, Any]] | None:
    """{class: precision, recall, F1, specificity (from the seeds' pooled confusion matrix), AUC (mean over seeds),
    and each one's 95% CI as `<key>_ci` ([low, high], None where not recorded or undefined)}; None without
    confusion matrices."""
    cm = pooled_confusion_matrix(group)
    classes = group.runs[0].results.get("classes")
    if cm is None or not classes or len(classes) != len(cm):
        return None
    table: dict[str, dict[str, Any]] = dict(metrics.per_class_metrics(cm, classes))
    for name in classes:
        aucs = [((run.results.get("per_class") or {}).get(name) or {}).get("auc") for run in group.runs]
        table[name] = {**table[name], "auc": float(np.mean(aucs)) if all(a is not None for a in aucs) else None}
    return with_class_cis(table, classes, _per_class_cis(group, len(classes)))


def _per_class_cis(group: RunGroup, num_classes: int) -> dict[str, np.ndarray]:
    """{"precision", "recall", "f1", "specificity", "auc": (classes, 2) 95% CIs} (flaxbench.class_intervals: Wilson
    intervals of the proportions, and bootstrap ones of F1 and AUC with tiles resampled as in accuracy_ci_pct); a
    key is left out where the runs did not record what it needs (per-tile predictions, class probabilities)."""
    cis: dict[str, np.ndarray] = {}
    pooled = _pooled_tiles(group, num_classes)
    if pooled is not None:
        cis.update(class_cis(*pooled, level=CI_LEVEL, num_resamples=CI_RESAMPLES, seed=CI_SEED))
    runs = test_probabilities(group)
    if runs is not None and all(p.shape[1] == num_classes for p, _, _ in runs):
        probabilities, labels, positions = _placed(runs)
        cis["auc"] = bootstrap.bootstrap_class_auc_ci(probabilities, labels, positions, level=CI_LEVEL,
                                                      num_resamples=CI_RESAMPLES, seed=CI_SEED)
    return cis


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


def tile_outcomes(runs: tuple[Run, ...]) -> dict[str, bool] | None:
    """{tile id: predicted correctly} over `runs` (one run, or one per fold); None without per-tile predictions."""
    outcomes = {}
    for run in runs:
        predictions = run.results.get("test_predictions")
        if predictions is None:
            return None
        outcomes.update((tile, label == predicted) for tile, label, predicted
                        in zip(predictions["ids"], predictions["labels"], predictions["predictions"]))
    return outcomes


class PooledTiles(NamedTuple):
    """A row's test predictions per tile id (sorted), its seeds' predictions on one tile pooled."""

    correct: np.ndarray  # (tiles,) predictions that were right
    trials: np.ndarray  # (tiles,) predictions made
    labels: np.ndarray  # (tiles,) true class
    predicted: np.ndarray  # (tiles, classes) predictions of each class


def _pooled_tiles(group: RunGroup, num_classes: int | None = None) -> PooledTiles | None:
    """The row's test predictions pooled per tile id over its seeds (and folds); None without per-tile predictions.

    `num_classes` sizes `predicted` (default: the largest class predicted or true, plus one)."""
    rows: dict[str, list] = {}  # tile id -> [true class, predicted classes]
    for run in group.runs:
        predictions = run.results.get("test_predictions")
        if predictions is None:
            return None
        for tile, label, predicted in zip(predictions["ids"], predictions["labels"], predictions["predictions"]):
            rows.setdefault(tile, [int(label), []])[1].append(int(predicted))
    if not rows:
        return None
    tiles = sorted(rows)
    labels = np.array([rows[t][0] for t in tiles])
    said = [np.asarray(rows[t][1]) for t in tiles]
    largest = max(int(labels.max()), max(int(p.max()) for p in said))
    if num_classes is not None and largest >= num_classes:  # not the row's classes: no per-class values
        return None
    width = num_classes or largest + 1
    predicted = np.stack([np.bincount(p, minlength=width) for p in said])
    correct = np.array([int(np.sum(p == label)) for p, label in zip(said, labels)])
    return PooledTiles(correct, predicted.sum(axis=1), labels, predicted)


def accuracy_ci_pct(group: RunGroup) -> tuple[float, float] | None:
    """95% bootstrap CI (in %) of the row's pooled test accuracy; None without per-tile predictions.

    Tiles are resampled; with several seeds all seeds' predictions on one tile id stay together,
    so seeds that share a test set do not count as extra independent tiles.
    """
    pooled = _pooled_tiles(group)
    if pooled is None:
        return None
    correct, trials, _, _ = pooled
    low, high = bootstrap.bootstrap_accuracy_ci(
        correct, trials=trials, level=CI_LEVEL, num_resamples=CI_RESAMPLES, seed=CI_SEED
    )
    return 100.0 * low, 100.0 * high


def balanced_accuracy_ci(group: RunGroup) -> tuple[float, float] | None:
    """95% bootstrap CI of the row's pooled balanced accuracy (tiles resampled as in accuracy_ci_pct)."""
    pooled = _pooled_tiles(group)
    if pooled is None:
        return None
    correct, trials, labels, _ = pooled
    return bootstrap.bootstrap_balanced_accuracy_ci(
        correct, trials, labels, level=CI_LEVEL, num_resamples=CI_RESAMPLES, seed=CI_SEED
    )


def test_probabilities(group: RunGroup) -> list[tuple[np.ndarray, np.ndarray, list[str]]] | None:
    """(class probabilities (n, C), true classes, tile ids) of each run's test tiles; None where a run did not
    record its class probabilities."""
    runs = []
    for run in group.runs:
        predictions = run.results.get("test_predictions") or {}
        if not predictions.get("probabilities"):
            return None
        runs.append((np.asarray(predictions["probabilities"], np.float64), np.asarray(predictions["labels"], np.int64),
                     list(predictions["ids"])))
    return runs


def macro_auc_ci(group: RunGroup) -> tuple[float, float] | None:
    """95% bootstrap CI of the row's macro AUC (the mean of its runs'), test tiles resampled as in accuracy_ci_pct;
    None where a run did not record per-tile class probabilities."""
    runs = test_probabilities(group)
    if runs is None:
        return None
    return bootstrap.bootstrap_macro_auc_ci(*_placed(runs), level=CI_LEVEL, num_resamples=CI_RESAMPLES, seed=CI_SEED)


def _placed(runs: list[tuple[np.ndarray, np.ndarray, list[str]]]) -> tuple[list, list, list[np.ndarray]]:
    """(probabilities, labels, tile positions) per run of `test_probabilities`, every tile id numbered once."""
    place: dict[str, int] = {}
    positions = [np.array([place.setdefault(tile, len(place)) for tile in ids]) for _, _, ids in runs]
    return [p for p, _, _ in runs], [y for _, y, _ in runs], positions


def test_set(group: RunGroup) -> tuple[tuple[str, ...], frozenset[str]] | None:
    """(classes, test tile ids) of a row's lowest-seed run (all its folds); None without per-tile test predictions."""
    outcomes = tile_outcomes(group.first_seed_runs)
    if outcomes is None:
        return None
    # Outcomes (right or wrong per tile) do not depend on the label order, only on the class set.
    return tuple(sorted(group.runs[0].results.get("classes") or ())), frozenset(outcomes)


class PairedComparison(NamedTuple):
    """A row's lowest-seed run (all its folds) against the best row's, tile by tile; None where not paired."""

    p_value: float | None  # exact McNemar test
    shared_tiles: int | None
    note: str | None  # why nothing was paired, or BEST_ROW_NOTE
    difference_pct: float | None = None  # accuracy minus the best row's, in percentage points
    difference_ci_pct: tuple[float, float] | None = None  # its paired bootstrap CI


def compare_with_best(group: RunGroup, best: RunGroup) -> PairedComparison:
    """The row's lowest-seed run (all its folds) against the best row's: McNemar p and the paired accuracy difference.

    Only rows tested on the best row's classes and exactly its test tiles are paired; the note
    says why the comparison is missing otherwise.
    """
    if group is best:
        return PairedComparison(None, None, BEST_ROW_NOTE)
    ours, theirs = tile_outcomes(group.first_seed_runs), tile_outcomes(best.first_seed_runs)
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
    shared = sorted(best_tiles)
    right, best_right = np.array([ours[t] for t in shared]), np.array([theirs[t] for t in shared])
    low, high = bootstrap.bootstrap_paired_difference_ci(right, best_right, level=CI_LEVEL,
                                                       num_resamples=CI_RESAMPLES, seed=CI_SEED)
    return PairedComparison(metrics.mcnemar_p_value(right, best_right), len(shared), None,
                            100.0 * float(np.mean(right) - np.mean(best_right)), (100.0 * low, 100.0 * high))


def _row(group: RunGroup, best: RunGroup) -> dict[str, Any]:
    """One machine-readable report row (numbers unformatted, None for n/a)."""
    accuracies = [100.0 * run.results["test_accuracy"] for run in group.runs]
    ci, balanced_ci, auc_ci = accuracy_ci_pct(group), balanced_accuracy_ci(group), macro_auc_ci(group)
    paired = compare_with_best(group, best)
    devices = recorded(group, "device")
    first = group.runs[0].results
    row: dict[str, Any] = {"name": group.name, "title": group.title, "test_accuracy_pct": statistics.fmean(accuracies)}
    for key in MEAN_FIELDS:
        row[key] = _mean([v for run in group.runs if (v := _run_value(run.results, key)) is not None])
    row.update(
        test_accuracy_ci95_low_pct=ci[0] if ci else None,
        test_accuracy_ci95_high_pct=ci[1] if ci else None,
        balanced_accuracy_ci95_low=balanced_ci[0] if balanced_ci else None,
        balanced_accuracy_ci95_high=balanced_ci[1] if balanced_ci else None,
        macro_auc_ci95_low=auc_ci[0] if auc_ci else None,
        macro_auc_ci95_high=auc_ci[1] if auc_ci else None,
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
        data=data_label(first) + _copies_label(copies := tile_copies(group),
                                               without := accuracy_without_copies_pct(group)),
        # test tiles pixel-identical to a train/val tile, and identical tile sets under two labels (None: not looked),
        # and the mean test accuracy without those tiles (None where there are none)
        test_tile_copies=copies[0] if copies else None,
        label_conflicts=copies[1] if copies else None,
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
    titles = [row["title"] for row in rows]
    for row in rows:  # figures label rows by title: rows that share one also show their name
        title = row["title"] if titles.count(row["title"]) == 1 else f"{row['title']} ({row['name']})"
        title = title if row["seeds"] == 1 else f"{title} ({row['seeds']} seeds)"
        missing = row["cv_folds"] and row["cv_folds_run"] < row["cv_folds"]
        row["label"] = f"{title} ({row['cv_folds_run']} of {row['cv_folds']} folds run)" if missing else title
    return Summary(
        rows=rows,
        groups=ordered,
        best=best.name,
        synthetic=any(is_synthetic(run.results) for group in groups for run in group.runs),
        test_sets=len({found for group in ordered if (found := test_set(group)) is not None}),
        devices=tuple(sorted({device for group in ordered for device in recorded(group, "device")})),
        external=external_lines(rows, ordered),
        settings=[row_settings(group) for group in ordered],
        per_class=[per_class(group) for group in ordered],
    )
