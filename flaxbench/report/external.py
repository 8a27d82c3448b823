"""The report's external test sets: the `evaluate --external` results (eval_external_*.json) beside each run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flaxbench.errors import FlaxbenchError
from flaxbench.report.collect import RunGroup

EXTERNAL_GLOB = "eval_external_*.json"
# What a line of the report reads from an external evaluation; each must be present.
EXTERNAL_KEYS = ("external", "checkpoint", "tta", "tiles", "accuracy", "accuracy_ci", "balanced_accuracy",
                 "balanced_accuracy_ci", "macro_f1", "macro_auc", "loss")


def _load_external(path: Path) -> dict[str, Any]:
    """The checked contents of one eval_external_*.json; a one-line FlaxbenchError naming the file if unusable."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FlaxbenchError(f"{path}: cannot read this external evaluation ({err.__class__.__name__}: {err}); "
                             "fix or remove it") from None
    missing = [key for key in EXTERNAL_KEYS if not isinstance(record, dict) or key not in record]
    if missing:
        raise FlaxbenchError(f"{path}: not an external evaluation (no '{missing[0]}'); remove it, or write it again "
                             "with python -m flaxbench evaluate --external")
    return record


def external_lines(rows: list[dict[str, Any]], groups: list[RunGroup]) -> list[dict[str, Any]]:
    """One entry per external evaluation of every run, in row order, then seed, then file name."""
    lines = []
    for row, group in zip(rows, groups):
        for run in group.runs:
            for path in sorted(run.path.parent.glob(EXTERNAL_GLOB)):
                record = _load_external(path)
                lines.append({
                    "name": row["name"], "title": row["title"], "seed": run.seed, "file": str(path),
                    "own_test_accuracy": run.results["test_accuracy"],
                    **{key: record[key] for key in EXTERNAL_KEYS},
                })
    return lines


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def external_section(lines: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of the external test sets table; none when no run has an external evaluation."""
    if not lines:
        return []
    out = ["", "## External test sets", "",
           "Tiles the runs never trained on (`python -m flaxbench evaluate --external`), beside each run's own "
           "test accuracy. 95% CIs: percentile bootstrap over the external tiles, as for the table above.", "",
           "| Name | Seed | Tiles from | Tiles | Checkpoint | Accuracy % (95% CI) | Balanced accuracy % (95% CI) "
           "| Macro-F1 | Macro AUC | Loss | Own test accuracy % |",
           "|" + "|".join("---" for _ in range(11)) + "|"]
    for line in lines:
        checkpoint = line["checkpoint"] + (", TTA" if line["tta"] else "")
        ci, balanced_ci = line["accuracy_ci"], line["balanced_accuracy_ci"]
        cells = [
            f"`{line['name']}`", "—" if line["seed"] is None else str(line["seed"]), f"`{line['external']}`",
            str(line["tiles"]), checkpoint, f"{_pct(line['accuracy'])} ({_pct(ci[0])}–{_pct(ci[1])})",
            f"{_pct(line['balanced_accuracy'])} ({_pct(balanced_ci[0])}–{_pct(balanced_ci[1])})",
            f"{line['macro_f1']:.3f}", "—" if line["macro_auc"] is None else f"{line['macro_auc']:.3f}",
            f"{line['loss']:.3f}", _pct(line["own_test_accuracy"]),
        ]
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return out
