"""The report's external test sets: the `evaluate --external` results (eval_external_*.json) beside each run.

A cross-validated row's folder may hold one too: its runs scored together, as an ensemble.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from flaxbench import metrics
from flaxbench.auc_intervals import macro_auc_interval
from flaxbench.class_intervals import CI_LEVEL, balanced_accuracy_interval, wilson_interval
from flaxbench.errors import FlaxbenchError
from flaxbench.group_design_effects import group_design_fields
from flaxbench.group_intervals import group_accuracy_interval, group_paired_comparison, recorded_groups
from flaxbench.report.collect import RunGroup, is_int, is_number

EXTERNAL_GLOB = "eval_external_*.json"


def _is_interval(value: Any) -> bool:
    """True for [low, high], two numbers."""
    return isinstance(value, list) and len(value) == 2 and all(map(is_number, value))


# What a line of the report reads from an external evaluation: each key's check and, for the error, what it expects.
_EXPECTED = {
    "external": (lambda v: isinstance(v, str), "a path"), "checkpoint": (lambda v: isinstance(v, str), "a name"),
    "tta": (lambda v: isinstance(v, bool), "true or false"),
    "tiles": (lambda v: is_int(v) and v > 0, "a positive count"),
    "accuracy": (is_number, "a number"), "balanced_accuracy": (is_number, "a number"),
    "macro_f1": (is_number, "a number"), "loss": (is_number, "a number"),
    "macro_auc": (lambda v: v is None or is_number(v), "a number or null"),
    "accuracy_ci": (_is_interval, "[low, high]"), "balanced_accuracy_ci": (_is_interval, "[low, high]"),
}
EXTERNAL_KEYS = tuple(_EXPECTED)


def _is_members(value: Any) -> bool:
    """True for a list of at least two runs, each a dict with a folder and an accuracy."""
    return isinstance(value, list) and len(value) > 1 and all(
        isinstance(m, dict) and isinstance(m.get("workdir"), str) and is_number(m.get("accuracy")) for m in value)


# Checked where present: external evaluations written before flaxbench recorded them lack them.
_EXPECTED_IF_PRESENT = {
    "macro_auc_ci": (lambda v: v is None or _is_interval(v), "[low, high] or null"),
    "ece": (is_number, "a number"), "ece_temperature_scaled": (lambda v: v is None or is_number(v), "a number or null"),
    "seen_by_runs": (lambda v: v is None or (isinstance(v, dict) and all(is_int(v.get(k)) for k in ("train", "val"))
                                             and (v.get("near") is None or isinstance(v["near"], dict))),
                     "null or counts of 'train' and 'val' tiles"),
    "accuracy_without_seen": (lambda v: v is None or is_number(v), "a number or null"),
}
_EXPECTED_OF_ENSEMBLE = {
    "members": (_is_members, "a list of two runs or more, each with a 'workdir' and an 'accuracy'"),
    "member_accuracy_mean": (is_number, "a number"), "member_accuracy_std": (is_number, "a number"),
}


def _load_external(path: Path) -> dict[str, Any]:
    """The checked contents of one eval_external_*.json; a one-line FlaxbenchError naming the file if unusable."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FlaxbenchError(f"{path}: cannot read this external evaluation ({err.__class__.__name__}: {err}); "
                             "fix or remove it") from None
    ensemble = isinstance(record, dict) and "members" in record
    present = {key: check for key, check in _EXPECTED_IF_PRESENT.items() if isinstance(record, dict) and key in record}
    expected = {**_EXPECTED, **present, **(_EXPECTED_OF_ENSEMBLE if ensemble else {})}
    missing = [key for key in expected if not isinstance(record, dict) or key not in record]
    wrong = [key for key in expected if not missing and not expected[key][0](record[key])]
    if missing or wrong:
        problem = f"no '{missing[0]}'" if missing else f"'{wrong[0]}' is not {expected[wrong[0]][1]}"
        raise FlaxbenchError(f"{path}: not an external evaluation ({problem}); remove it, or write it again with "
                             "python -m flaxbench evaluate --external")
    return record


def external_lines(rows: list[dict[str, Any]], groups: list[RunGroup]) -> list[dict[str, Any]]:
    """One entry per external evaluation of every run, in row order, then fold and seed, then file name.

    A cross-validated row's ensembles (in the row's folder) come after its runs' own entries, their
    own test accuracy the mean of the row's runs'. Entries scored on the same tiles (same external
    folder, tile ids and true classes) are compared with the most accurate of them by an exact
    McNemar test, as the table's rows are with the best row.
    """
    lines, outcomes = [], []
    for row, group in zip(rows, groups):
        for run in group.runs:
            for path in sorted(run.path.parent.glob(EXTERNAL_GLOB)):
                record = _load_external(path)
                lines.append(_line(row, record, path, run.seed, run.fold, run.results["test_accuracy"]))
                outcomes.append(_tile_outcomes(record))
        own = statistics.fmean(run.results["test_accuracy"] for run in group.runs)
        for folder in _row_folders(group):
            for path in sorted(folder.glob(EXTERNAL_GLOB)):
                record = _load_external(path)
                lines.append(_line(row, record, path, None, None, own))
                outcomes.append(_tile_outcomes(record))
    _compare_on_shared_tiles(lines, outcomes)
    return lines


def _line(row: dict[str, Any], record: dict[str, Any], path: Path, seed: int | None, fold: int | None,
          own_test_accuracy: float) -> dict[str, Any]:
    """The report's entry for one checked external evaluation of `row`'s run (seed, fold) or of its ensemble."""
    members = record.get("members")
    balanced_ci, auc_ci = _recomputed_cis(record)
    return {
        "name": row["name"], "title": row["title"], "seed": seed, "fold": fold, "file": str(path),
        "own_test_accuracy": own_test_accuracy, **{key: record[key] for key in EXTERNAL_KEYS},
        # The accuracy's Wilson interval from its tiles, balanced accuracy's and macro AUC's from its tiles'
        # predictions, as the tables' (files written by older versions of flaxbench hold bootstrap ones).
        "accuracy_ci": [float(x) for x in wilson_interval(record["accuracy"], record["tiles"], CI_LEVEL)],
        "balanced_accuracy_ci": balanced_ci,
        # with evaluate --external --group-by: the accuracy's 95% CI over the tiles' patients or slides
        "macro_auc_ci": auc_ci,
        **_over_groups(record, balanced_ci, auc_ci),
        "center_crop": record.get("center_crop"), "ensemble_of": len(members) if members else None,
        "ece": record.get("ece"), "ece_temperature_scaled": record.get("ece_temperature_scaled"),
        # tiles pixel-identical to ones the runs trained or validated on (None: not looked for)
        "seen_in_training": _seen_in_training(record.get("seen_by_runs")),
        "accuracy_without_seen": record.get("accuracy_without_seen"),
        # tiles from patients or slides the runs trained or validated on (a known naming convention; None: not looked)
        **_from_training_groups(record.get("seen_groups")),
        "accuracy_without_seen_groups": record.get("accuracy_without_seen_groups"),
        "member_accuracy_mean": record.get("member_accuracy_mean"),
        "member_accuracy_std": record.get("member_accuracy_std"),
    }


def _recomputed_cis(record: dict[str, Any]) -> tuple[list[float], list[float] | None]:
    """Balanced accuracy's and macro AUC's 95% CIs of an external evaluation from its per-tile predictions
    (class_intervals, auc_intervals), else the ones it holds."""
    balanced_ci, auc_ci = record["balanced_accuracy_ci"], record.get("macro_auc_ci")
    try:
        predictions = record["predictions"]
        labels = np.asarray(predictions["labels"], np.int64)
        correct = np.equal(labels, np.asarray(predictions["predictions"], np.int64))
        balanced_ci = list(balanced_accuracy_interval(correct, np.ones(correct.size), labels, CI_LEVEL))
        if predictions.get("probabilities") and auc_ci is not None:
            found = macro_auc_interval([np.asarray(predictions["probabilities"], np.float64)], [labels], level=CI_LEVEL)
            auc_ci = None if found is None else list(found)
    except (TypeError, KeyError, ValueError):
        pass
    return balanced_ci, auc_ci


def _over_groups(record: dict[str, Any], balanced_ci: list[float], auc_ci: list[float] | None) -> dict[str, Any]:
    """{"group_by", "groups", "accuracy_ci_groups", "balanced_accuracy_ci_groups", "macro_auc_ci_groups"} of an
    external evaluation, computed again from its per-tile predictions and tile-level CIs `balanced_ci` and `auc_ci`
    (None without --group-by or readable predictions)."""
    fields = {"group_by": record.get("group_by"), "groups": None, "accuracy_ci_groups": None,
              "balanced_accuracy_ci_groups": None, "macro_auc_ci_groups": None}
    try:
        predictions = record["predictions"]
        groups = recorded_groups(predictions["ids"], record.get("group_by"))
        if groups is None:
            return fields
        found = group_accuracy_interval(np.equal(predictions["labels"], predictions["predictions"]), None, groups)
        fields.update(groups=found.groups, accuracy_ci_groups=found.interval and list(found.interval),
                      **group_design_fields(predictions, groups, balanced_ci, auc_ci))
    except (TypeError, KeyError, ValueError):
        pass
    return fields


def _from_training_groups(found: Any) -> dict[str, Any]:
    """{"seen_groups_tiles", "seen_groups_what"} of an external evaluation's `seen_groups` record (None without)."""
    if not isinstance(found, dict) or not is_int(found.get("tiles")):
        return {"seen_groups_tiles": None, "seen_groups_what": None}
    return {"seen_groups_tiles": found["tiles"], "seen_groups_what": str(found.get("what", "patients or slides"))}


def _seen_in_training(seen: dict[str, Any] | None) -> int | None:
    """The external tiles that copy, or nearly copy, a tile the runs trained or validated on (None: not looked
    for)."""
    if not seen:
        return None
    near = seen.get("near") or {}
    return seen["train"] + seen["val"] + int(near.get("train") or 0) + int(near.get("val") or 0)


def _row_folders(group: RunGroup) -> list[Path]:
    """The folders of a cross-validated row (NAME_Kfold, holding fold_<k>), where its ensembles' results lie."""
    if group.folds is None:
        return []
    folders = []
    for run in group.runs:
        fold = next((p for p in run.path.parents if re.fullmatch(r"fold_\d+", p.name)), None)
        if fold is not None and fold.parent not in folders:
            folders.append(fold.parent)
    return folders


def _tile_outcomes(record: dict[str, Any]) -> tuple[frozenset, dict[str, bool]] | None:
    """(the labelled tiles as {(id, true class)}, {tile id: predicted right}) of an external evaluation.

    None if it holds no readable per-tile predictions.
    """
    predictions, classes = record.get("predictions"), record.get("classes")
    try:
        ids, labels = predictions["ids"], [classes[label] for label in predictions["labels"]]
        right = [label == predicted for label, predicted in zip(predictions["labels"], predictions["predictions"],
                                                                 strict=True)]
        return frozenset(zip(ids, labels, strict=True)), dict(zip(ids, right, strict=True))
    except (TypeError, KeyError, IndexError, ValueError):
        return None


def _compare_on_shared_tiles(lines: list[dict[str, Any]], outcomes: list[tuple[frozenset, dict] | None]) -> None:
    """Set each line's `mcnemar_p_vs_best` (None for the best line, or a line with no other on its tiles), and
    `mcnemar_p_holm`, those p-values Holm-adjusted over the lines compared on the same tiles."""
    by_set: dict[tuple, list[int]] = {}
    for k, (line, found) in enumerate(zip(lines, outcomes)):
        line["mcnemar_p_vs_best"], line["mcnemar_p_holm"], line["best_on_these_tiles"] = None, None, False
        line["p_vs_best_groups"], line["p_vs_best_groups_holm"] = None, None  # with --group-by: over its groups
        if found is not None:  # the same folder, tiles and true classes
            by_set.setdefault((line["external"], found[0]), []).append(k)
    for members in by_set.values():
        if len(members) < 2:
            continue
        best = max(members, key=lambda k: lines[k]["accuracy"])  # the first of equals, in row order
        lines[best]["best_on_these_tiles"] = True
        theirs = outcomes[best][1]
        tiles = sorted(theirs)
        groups = _shared_groups([lines[k] for k in members], tiles)
        for k in members:
            if k != best:
                ours, theirs_right = [outcomes[k][1][t] for t in tiles], [theirs[t] for t in tiles]
                lines[k]["mcnemar_p_vs_best"] = metrics.mcnemar_p_value(ours, theirs_right)
                if groups is not None:
                    lines[k]["p_vs_best_groups"] = group_paired_comparison(ours, theirs_right, groups).p_value
        for key in ("mcnemar_p", "p_vs_best_groups"):
            tested = "mcnemar_p_vs_best" if key == "mcnemar_p" else key
            for k, adjusted in zip(members, metrics.holm_adjusted([lines[k][tested] for k in members])):
                lines[k][f"{key}_holm"] = adjusted


def _shared_groups(lines: list[dict[str, Any]], tiles: list[str]) -> list[str] | None:
    """The group of each of `tiles` where every line scored on them was grouped by one --group-by; else None."""
    patterns = {line.get("group_by") for line in lines}
    return recorded_groups(tiles, patterns.pop()) if len(patterns) == 1 else None


def _p_value(line: dict[str, Any]) -> str:
    """The McNemar cell: 'best' for the most accurate line on its tiles, a dash where nothing was compared."""
    if line["best_on_these_tiles"]:
        return "best"
    p, adjusted = line["mcnemar_p_vs_best"], line.get("mcnemar_p_holm", line["mcnemar_p_vs_best"])
    if p is None:
        return "—"
    cell = format(p, ".3g") if adjusted == p else f"{p:.3g} (Holm {adjusted:.3g})"
    over, over_adjusted = line.get("p_vs_best_groups"), line.get("p_vs_best_groups_holm")
    if over is None:
        return cell
    return cell + f"; over groups {over:.3g}" + ("" if over_adjusted == over else f" (Holm {over_adjusted:.3g})")


def _seed_cell(line: dict[str, Any]) -> str:
    """The run's seed, and its cross-validation fold if it has one; a dash for an unknown seed; an ensemble's size."""
    if line.get("ensemble_of"):
        return f"ensemble of {line['ensemble_of']} runs"
    seed = "—" if line["seed"] is None else str(line["seed"])
    return seed if line.get("fold") is None else f"{seed}, fold {line['fold']}"


def _groups_ci(line: dict[str, Any], key: str = "accuracy_ci_groups", shown: Callable[[float], str] | None = None
               ) -> str:
    """'; 61.0–88.2 over 14 groups' after a CI of `line` (its accuracy's, or another `key` shown by `shown`), from
    evaluate --external --group-by; '' without."""
    if line.get("groups") is None:
        return ""
    interval = line.get(key)
    if interval is None:
        return f"; {line['groups']} group{'s' if line['groups'] > 1 else ''}, no CI over groups"
    shown = shown or _pct
    return f"; {shown(interval[0])}–{shown(interval[1])} over {line['groups']} groups"


def _runs(line: dict[str, Any]) -> str:
    """'; runs 88.1 ± 1.2' for an ensemble: its runs' own accuracies on the tiles; '' for one run."""
    if not line.get("ensemble_of"):
        return ""
    return f"; runs {_pct(line['member_accuracy_mean'])} ± {_pct(line['member_accuracy_std'])}"


def _auc_cell(line: dict[str, Any]) -> str:
    """Macro AUC with its 95% CI where recorded ('0.912 (0.887–0.934)'); a dash where no class had one."""
    if line["macro_auc"] is None:
        return "—"
    ci = line.get("macro_auc_ci")
    over_groups = _groups_ci(line, "macro_auc_ci_groups", lambda x: f"{x:.3f}")
    return f"{line['macro_auc']:.3f}" + ("" if ci is None else f" ({ci[0]:.3f}–{ci[1]:.3f}{over_groups})")


def _ece_cell(line: dict[str, Any]) -> str:
    """ECE, with the ECE after temperature scaling in brackets where recorded ('0.213 (0.087)'); a dash if none."""
    if line.get("ece") is None:
        return "—"
    scaled = line.get("ece_temperature_scaled")
    return f"{line['ece']:.3f}" + ("" if scaled is None else f" ({scaled:.3f})")


def _seen_note(line: dict[str, Any]) -> str:
    """' (2 seen in training; accuracy without them 81.3%)' after the tile count, and ' (40 from TCGA patients
    trained on; ...)' where tiles come from the runs' training patients; nothing where neither."""
    notes = []
    for count, what, without in ((line.get("seen_in_training"), "seen in training", line.get("accuracy_without_seen")),
                                 (line.get("seen_groups_tiles"), f"from {line.get('seen_groups_what')} trained on",
                                  line.get("accuracy_without_seen_groups"))):
        if count:
            notes.append(f" ({count} {what}" + (f"; accuracy without them {_pct(without)}%)" if is_number(without)
                                                 else ")"))
    return "".join(notes)


def _pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal; a dash for None."""
    return "—" if value is None else f"{100 * value:.1f}"


EXTERNAL_HEADERS = ["Name", "Seed", "Tiles from", "Tiles", "Checkpoint", "Accuracy % (95% CI)",
                    "Balanced accuracy % (95% CI)", "Macro-F1", "Macro AUC (95% CI)", "Loss",
                    "ECE (temperature-scaled)", "McNemar p", "Own test accuracy %"]


def external_cells(line: dict[str, Any]) -> list[str]:
    """The cells, under EXTERNAL_HEADERS, of one external evaluation in the report's table."""
    checkpoint = line["checkpoint"] + (", TTA" if line["tta"] else "")
    ci, balanced_ci = line["accuracy_ci"], line["balanced_accuracy_ci"]
    return [
        f"`{line['name']}`", _seed_cell(line),
        f"`{line['external']}`" + (f" (central {line['center_crop']} px)" if line["center_crop"] else ""),
        str(line["tiles"]) + _seen_note(line),
        checkpoint, f"{_pct(line['accuracy'])} ({_pct(ci[0])}–{_pct(ci[1])}{_groups_ci(line)})" + _runs(line),
        f"{_pct(line['balanced_accuracy'])} ({_pct(balanced_ci[0])}–{_pct(balanced_ci[1])}"
        f"{_groups_ci(line, 'balanced_accuracy_ci_groups')})",
        f"{line['macro_f1']:.3f}", _auc_cell(line),
        f"{line['loss']:.3f}", _ece_cell(line), _p_value(line), _pct(line["own_test_accuracy"]),
    ]


def external_section(lines: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of the external test sets table; none when no run has an external evaluation."""
    if not lines:
        return []
    out = ["", "## External test sets", "",
           "Tiles the runs never trained on (`python -m flaxbench evaluate --external`), beside each run's own "
           "test accuracy. 95% CIs over the external tiles, as for the tables above (accuracy: Wilson; with "
           "`evaluate --external --group-by`, accuracy's, balanced accuracy's and macro AUC's also over the tiles' "
           "patients or slides after a semicolon, as the study's and Statistics tables' CIs over them). "
           "McNemar p: exact test against the most accurate line scored on the same tiles (same folder, tile ids "
           "and true classes), tiles paired by id, with the Holm-adjusted p over the lines compared on those tiles "
           "where it differs; a dash where no other line shares them; where the lines on those tiles were all "
           "grouped by one `--group-by`, also the two-sided p of the paired difference over the groups (as the "
           "Statistics table's over patients or slides). An ensemble (a "
           "cross-validated row's folder, `evaluate --workdir NAME_Kfold --external`) scores its runs' mean class "
           "probabilities; 'runs m ± s' is the mean ± std of those runs' own accuracies on the tiles, and its own "
           "test accuracy the mean of theirs. ECE in brackets: after dividing each run's logits by the temperature "
           "it fitted on its own validation tiles (from the best checkpoint without TTA). Tiles 'seen in training' "
           "are pixel-identical to, or near-copies of (rotated, flipped, re-saved, resized or recoloured), tiles "
           "the runs trained or validated on (the runs' tile_digests.npz): not external, and their accuracy "
           "flatters the line; tiles 'from ... trained on' come from patients or slides the runs' train or val "
           "tiles came from, by names that identify one wherever they appear (Kather 2016 slides, TCGA barcodes), "
           "and are not external either.", "",
           "| " + " | ".join(EXTERNAL_HEADERS) + " |", "|" + "|".join("---" for _ in EXTERNAL_HEADERS) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in external_cells(line)) + " |" for line in lines]
    return out
