"""The comparison table: its columns and the Markdown, CSV and JSON writers."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flaxbench.report.external import external_section
from flaxbench.report.settings import settings_section
from flaxbench.report.software import software, software_lines
from flaxbench.report.notes import table_notes
from flaxbench.report.per_class import per_class_sections
from flaxbench.report.references import references_section
from flaxbench.report.summary import (
    BEST_ROW_NOTE, CI_LEVEL, SYNTHETIC_BANNER, Summary, any_split_by_group,
)

# 2: the bootstrap settings ("bootstrap") gave way to "ci_level" when no interval was a bootstrap any more
REPORT_FORMAT = "flaxbench.report/2"
NA = "n/a"


class Footnotes:
    """Numbered footnotes for the Markdown table; the same text gets the same number."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        """The marker, e.g. '[1]', of `text`, adding it if new."""
        if text not in self.texts:
            self.texts.append(text)
        return f"[{self.texts.index(text) + 1}]"


@dataclass(frozen=True)
class Column:
    """One table column: its Markdown header, the row keys it shows, and how to print them."""

    header: str
    keys: tuple[str, ...]  # the CSV/JSON columns (a CI is two numbers, one Markdown cell)
    render: Callable[[dict[str, Any], Footnotes], str]
    # Whether report.md and report.tex show the column for these rows (the CSV and JSON always hold its keys).
    shown: Callable[[list[dict[str, Any]]], bool] = lambda rows: True


def _number(key: str, spec: str) -> Callable[[dict[str, Any], Footnotes], str]:
    """A renderer printing row[key] with format `spec`, n/a when absent."""
    return lambda row, _: NA if row.get(key) is None else format(row[key], spec)


def _si(value: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {suffix}"
    return f"{value:.0f}"


def _flops_cell(row: dict[str, Any], _: Footnotes) -> str:
    return NA if row.get("flops_per_image") is None else _si(row["flops_per_image"])


def _name_cell(row: dict[str, Any], _: Footnotes) -> str:
    return row["title"] if row["title"] == row["name"] else f"{row['title']} (`{row['name']}`)"


def _interval(low_key: str, high_key: str, spec: str) -> Callable[[dict[str, Any], Footnotes], str]:
    """A cell '[low, high]' of two row values formatted with `spec`, n/a when missing."""

    def cell(row: dict[str, Any], _: Footnotes) -> str:
        low, high = row[low_key], row[high_key]
        return NA if low is None else f"[{low:{spec}}, {high:{spec}}]"

    return cell


FEW_GROUPS_NOTE = ("the row's test tiles come from one patient or slide, so how its accuracy varies over patients "
                   "or slides cannot be seen: the tile-level figures count its tiles as independent, and none "
                   "speaks for other patients")


def _group_interval(low_key: str, high_key: str, spec: str) -> Callable[[dict[str, Any], Footnotes], str]:
    """A cell '[80.10, 95.00] over 24' of a CI over the row's test groups; a dash for a row split tile by tile, n/a
    with a note from one group."""
    over_tiles = _interval(low_key, high_key, spec)

    def cell(row: dict[str, Any], notes: Footnotes) -> str:
        groups = row["test_groups"]
        if groups is None:
            return "—"
        if groups < 2:
            return f"{NA} ({groups} group) {notes.mark(FEW_GROUPS_NOTE)}"
        return f"{over_tiles(row, notes)} over {groups}" if row[low_key] is not None else NA

    return cell


OTHER_GROUPS_NOTE = ("the row's and the best row's tiles are not grouped by one pattern (spec.data.group_by or a "
                     "naming convention), so their groups are not the same units")


def _versus_best_over_groups(cell: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any], Footnotes], str]:
    """A renderer of a comparison with the best row over the test groups: as _versus_best, and a dash for a row
    split tile by tile, n/a with the reason where the groups give none."""
    over_tiles = _versus_best(cell)

    def render(row: dict[str, Any], notes: Footnotes) -> str:
        if row["test_groups"] is None:
            return "—"
        if row["mcnemar_note"] == BEST_ROW_NOTE or row["mcnemar_p_vs_best"] is None:
            return over_tiles(row, notes)
        if row["p_vs_best_groups"] is None:
            return f"{NA} {notes.mark(FEW_GROUPS_NOTE if row['test_groups'] < 2 else OTHER_GROUPS_NOTE)}"
        return cell(row)

    return render


def _difference_over_groups(row: dict[str, Any]) -> str:
    """'-3.33 [-9.10, +2.44]': the row's accuracy minus the best row's, in percentage points, with its CI over the
    test groups."""
    return (f"{row['accuracy_vs_best_pct']:+.2f} [{row['accuracy_vs_best_group_ci95_low_pct']:+.2f}, "
            f"{row['accuracy_vs_best_group_ci95_high_pct']:+.2f}]")


def _mean_std_cell(row: dict[str, Any], _: Footnotes) -> str:
    std = row["test_accuracy_std_pct"]
    return "—" if std is None else f"{row['test_accuracy_pct']:.2f} ± {std:.2f}"


COMPILE_CACHE_NOTE = ("in some of the row's runs, partly the loading of programs from the persistent compilation "
                      "cache rather than compiling them; FLAXBENCH_COMPILATION_CACHE=off times compiles")


def _compile_cell(row: dict[str, Any], notes: Footnotes) -> str:
    cell = _number("compile_time_s", ".1f")(row, notes)
    return f"{cell} {notes.mark(COMPILE_CACHE_NOTE)}" if row.get("compile_cache_runs") else cell


MIXED_DEVICES_NOTE = ("the row's runs ran on different devices (its seeds, or one run's epochs before and after a "
                      "resume: results.json's device_starts), and its times mix them")


def _device_cell(row: dict[str, Any], notes: Footnotes) -> str:
    cell = ", ".join(value for value in (row["device"], row["dtype"]) if value) or NA
    return f"{cell} {notes.mark(MIXED_DEVICES_NOTE)}" if row["mixed_devices"] else cell


def _versus_best(cell: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any], Footnotes], str]:
    """A renderer of a comparison with the best row: a dash in the best row, n/a with the reason where unpaired."""

    def render(row: dict[str, Any], notes: Footnotes) -> str:
        if row["mcnemar_note"] == BEST_ROW_NOTE:
            return "—"
        if row["mcnemar_p_vs_best"] is None:
            return f"{NA} {notes.mark(row['mcnemar_note'])}"
        return cell(row)

    return render


def _difference(row: dict[str, Any]) -> str:
    """'-3.33 [-6.67, 0.00]': the row's accuracy minus the best row's, in percentage points, with its CI."""
    return (f"{row['accuracy_vs_best_pct']:+.2f} [{row['accuracy_vs_best_ci95_low_pct']:+.2f}, "
            f"{row['accuracy_vs_best_ci95_high_pct']:+.2f}]")


COPIES_NOTE = "some of the row's test tiles copy, or nearly copy, its training or validation tiles: see the Data column"
SHARED_GROUPS_NOTE = ("some of the row's test tiles come from patients or slides its training tiles came from too "
                      "(its split did not keep them apart): see the Data column")


def _test_accuracy_cell(row: dict[str, Any], notes: Footnotes) -> str:
    cell = _number("test_accuracy_pct", ".2f")(row, notes)
    if row["test_tile_copies"] or row["test_tile_near_copies"]:
        cell += f" {notes.mark(COPIES_NOTE)}"
    return f"{cell} {notes.mark(SHARED_GROUPS_NOTE)}" if row["test_tiles_in_training_groups"] else cell


NAME_AND_TITLE = Column("Name (title)", ("name", "title"), _name_cell)
# The later tables name their rows again; the CSV and JSON hold the name once.
NAME = Column("Name", (), lambda row, _: f"`{row['name']}`")


@dataclass(frozen=True)
class Table:
    """One table of report.md: its heading and its columns."""

    heading: str
    columns: tuple[Column, ...]

    def shown_columns(self, rows: list[dict[str, Any]]) -> tuple[Column, ...]:
        """The columns report.md and report.tex show for `rows`."""
        return tuple(column for column in self.columns if column.shown(rows))


TABLES: tuple[Table, ...] = (
    # The study's columns first, in its order, then what a paper states beside its accuracy.
    Table("The study's table", (
        NAME_AND_TITLE,
        Column("Test accuracy (%)", ("test_accuracy_pct",), _test_accuracy_cell),
        Column("Test avg loss", ("test_loss",), _number("test_loss", ".4f")),
        Column("Time cost (s)", ("train_time_s",), _number("train_time_s", ".1f")),
        Column("Accuracy per second (%/s)", ("accuracy_per_second",), _number("accuracy_per_second", ".4g")),
        Column("Loss per second (1/s)", ("loss_per_second",), _number("loss_per_second", ".4g")),
        Column("Layers", ("layers",), _number("layers", ".0f")),
        Column("95% CI of test accuracy (%)", ("test_accuracy_ci95_low_pct", "test_accuracy_ci95_high_pct"),
               _interval("test_accuracy_ci95_low_pct", "test_accuracy_ci95_high_pct", ".2f")),
        Column("95% CI over patients or slides (%, groups)",
               ("test_accuracy_group_ci95_low_pct", "test_accuracy_group_ci95_high_pct", "test_groups"),
               _group_interval("test_accuracy_group_ci95_low_pct", "test_accuracy_group_ci95_high_pct", ".2f"),
               shown=any_split_by_group),
        Column("Seeds (n)", ("seeds",), _number("seeds", "d")),
        Column("Test accuracy mean ± std (%)", ("test_accuracy_std_pct",), _mean_std_cell),
    )),
    Table("Statistics", (
        NAME,
        Column("Macro-F1", ("macro_f1",), _number("macro_f1", ".3f")),
        Column("Balanced accuracy", ("balanced_accuracy",), _number("balanced_accuracy", ".3f")),
        Column("95% CI of balanced accuracy", ("balanced_accuracy_ci95_low", "balanced_accuracy_ci95_high"),
               _interval("balanced_accuracy_ci95_low", "balanced_accuracy_ci95_high", ".3f")),
        Column("95% CI of balanced accuracy over patients or slides (groups)",
               ("balanced_accuracy_group_ci95_low", "balanced_accuracy_group_ci95_high"),
               _group_interval("balanced_accuracy_group_ci95_low", "balanced_accuracy_group_ci95_high", ".3f"),
               shown=any_split_by_group),
        Column("Macro AUC", ("macro_auc",), _number("macro_auc", ".3f")),
        Column("95% CI of macro AUC", ("macro_auc_ci95_low", "macro_auc_ci95_high"),
               _interval("macro_auc_ci95_low", "macro_auc_ci95_high", ".3f")),
        Column("95% CI of macro AUC over patients or slides (groups)",
               ("macro_auc_group_ci95_low", "macro_auc_group_ci95_high"),
               _group_interval("macro_auc_group_ci95_low", "macro_auc_group_ci95_high", ".3f"),
               shown=any_split_by_group),
        Column("ECE", ("ece",), _number("ece", ".3f")),
        Column("ECE, temperature-scaled", ("ece_temperature_scaled",), _number("ece_temperature_scaled", ".3f")),
        Column("Accuracy vs best, paired (pp, 95% CI)",
               ("accuracy_vs_best_pct", "accuracy_vs_best_ci95_low_pct", "accuracy_vs_best_ci95_high_pct"),
               _versus_best(_difference)),
        Column("McNemar p vs best", ("mcnemar_p_vs_best",),
               _versus_best(lambda r: format(r["mcnemar_p_vs_best"], ".3g"))),
        Column("McNemar p, Holm-adjusted", ("mcnemar_p_holm",),
               _versus_best(lambda r: format(r["mcnemar_p_holm"], ".3g"))),
        Column("Accuracy vs best over patients or slides (pp, 95% CI)",
               ("accuracy_vs_best_group_ci95_low_pct", "accuracy_vs_best_group_ci95_high_pct"),
               _versus_best_over_groups(_difference_over_groups), shown=any_split_by_group),
        Column("p vs best over patients or slides (Holm-adjusted)", ("p_vs_best_groups", "p_vs_best_groups_holm"),
               _versus_best_over_groups(lambda r: f"{r['p_vs_best_groups']:.3g} ({r['p_vs_best_groups_holm']:.3g})"),
               shown=any_split_by_group),
    )),
    Table("Cost and provenance", (
        NAME,
        Column("Params", ("params",), _number("params", ",.0f")),
        Column("FLOPs / image", ("flops_per_image",), _flops_cell),
        Column("Images/s", ("images_per_second",), _number("images_per_second", ".1f")),
        Column("Compile time (s)", ("compile_time_s",), _compile_cell),
        Column("Device", ("device", "dtype"), _device_cell),
        Column("Initial weights", ("init",), lambda r, _: r["init"] or NA),
        Column("Data", ("data",), lambda r, _: r["data"]),
    )),
)
COLUMNS: tuple[Column, ...] = tuple(column for table in TABLES for column in table.columns)

# CSV columns: every column's keys in table order, then the machine-only details.
CSV_KEYS: tuple[str, ...] = tuple(k for c in COLUMNS for k in c.keys) + (
    "synthetic",
    "compile_cache_runs",
    "mcnemar_shared_tiles",
    "mcnemar_note",
    "cv_folds",
    "cv_folds_run",
    "temperature",
    "test_loss_temperature_scaled",
    "test_tile_copies",
    "test_tiles_in_training_groups",
    "test_tile_near_copies",
    "label_conflicts",
    "near_copy_label_conflicts",
    "test_accuracy_without_copies_pct",
    "test_groups_design_effect",
)
JSON_KEYS: tuple[str, ...] = CSV_KEYS + ("seed_values", "results_files")


def _finite_or_none(value: Any) -> Any:
    """NaN/inf become None, so report.json stays strict JSON."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_csv(summary: Summary, path: Path) -> Path:
    """report.csv: one line per row, raw numbers, 'n/a' where a value is missing."""
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(CSV_KEYS)
        for row in summary.rows:
            writer.writerow([NA if row[k] is None else row[k] for k in CSV_KEYS])
    return path


def write_json(summary: Summary, path: Path, runs_dir: Path) -> Path:
    """report.json: the same rows as plain numbers (null where missing) plus how they were made."""
    document = {
        "format": REPORT_FORMAT,
        "runs_dir": str(runs_dir),
        "synthetic": summary.synthetic,
        "banner": SYNTHETIC_BANNER if summary.synthetic else None,
        "best": summary.best,
        "devices": list(summary.devices),
        "ci_level": CI_LEVEL,
        "columns": list(JSON_KEYS),
        "rows": [{k: _finite_or_none(row[k]) for k in JSON_KEYS} for row in summary.rows],
        # Per row and class: precision, recall, F1 and specificity of the seeds' pooled test predictions, AUC
        # their mean, each with its 95% CI (`<key>_ci`: Wilson for the proportions and F1's Jaccard index, a score
        # interval for AUC; flaxbench.class_intervals).
        "per_class": {row["name"]: table for row, table in zip(summary.rows, summary.per_class)},
        # Each run's `evaluate --external` results: tiles it never trained on.
        "external": summary.external,
        # Per row: the settings its runs share, from their spec.json (null without one).
        "settings": {row["name"]: settings for row, settings in zip(summary.rows, summary.settings)},
        # The packages' versions the runs recorded, with the rows that used each.
        "software": software(summary.groups),
        # Run directories under runs_dir with a spec.json (or a study's failed.json) but no results.json: not in
        # the rows; and of those, the error of each a study saw fail.
        "unfinished_runs": list(summary.unfinished),
        "failed_runs": dict(summary.failed),
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    return path


def markdown(summary: Summary, runs_dir: Path, figures: dict[str, Path]) -> str:
    """report.md: banner (if synthetic), the tables, column notes, footnotes, the sections below them, figure
    links and the references the notes cite."""
    footnotes = Footnotes()
    lines = ["# flaxbench comparison report", ""]
    if summary.synthetic:
        synthetic_rows = ", ".join(f"`{row['name']}`" for row in summary.rows if row["synthetic"])
        lines += [f"> **{SYNTHETIC_BANNER}.** Rows on synthetic data: {synthetic_rows}.", ""]
    num_files = sum(len(row["results_files"]) for row in summary.rows)
    rows, files = len(summary.rows), f"{num_files} results.json file{'s' if num_files > 1 else ''}"
    lines += [f"{rows} row{'s' if rows > 1 else ''} from {files} under `{runs_dir}`, best first; the notes under "
              "the tables define their columns."]
    for table in TABLES:
        columns = table.shown_columns(summary.rows)
        lines += ["", f"## {table.heading}", "", "| " + " | ".join(column.header for column in columns) + " |",
                  "|" + "|".join("---" for _ in columns) + "|"]
        lines += ["| " + " | ".join(column.render(row, footnotes).replace("|", "\\|") for column in columns)
                  + " |" for row in summary.rows]
    lines += ["", "## Notes on the tables", ""] + [f"- {note}" for note in table_notes(summary)]
    if footnotes.texts:
        lines += [""] + [f"[{i}] {text}." for i, text in enumerate(footnotes.texts, start=1)]
    lines += settings_section(summary.rows, summary.settings)
    lines += software_lines(summary.groups)
    lines += per_class_sections(summary)
    lines += external_section(summary.external)
    lines += ["", "## Figures", ""]
    lines += [f"![{key.replace('_', ' ')}]({path.name})" for key, path in figures.items()]
    lines += references_section("\n".join(lines))
    return "\n".join(lines) + "\n"


def write_markdown(summary: Summary, path: Path, runs_dir: Path, figures: dict[str, Path]) -> Path:
    """Write report.md to `path`."""
    path.write_text(markdown(summary, runs_dir, figures), encoding="utf-8")
    return path
