"""write_report end to end: md/csv/json columns, seeds, McNemar, synthetic marking, PNG figures."""

from __future__ import annotations

import csv
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flaxbench.report import write_report
from tests.report.factory import make_results, write_results

BANNER = "SYNTHETIC DATA — not a histology result"
STUDY_HEADERS = [
    "Name (title)",
    "Test accuracy (%)",
    "Test avg loss",
    "Time cost (s)",
    "Accuracy per second (%/s)",
    "Loss per second (1/s)",
    "Layers",
]
# Each Markdown table's headers, after the name
TABLE_HEADERS = {
    "The study's table": STUDY_HEADERS + ["95% CI of test accuracy (%)", "Seeds (n)", "Test accuracy mean ± std (%)"],
    "Statistics": ["Name", "Macro-F1", "Balanced accuracy", "95% CI of balanced accuracy", "Macro AUC",
                   "95% CI of macro AUC", "ECE", "ECE, temperature-scaled", "Accuracy vs best, paired (pp, 95% CI)",
                   "McNemar p vs best", "McNemar p, Holm-adjusted"],
    "Cost and provenance": ["Name", "Params", "FLOPs / image", "Images/s", "Compile time (s)", "Device",
                            "Initial weights", "Data"],
}
ROW_KEYS = [
    "name", "title", "test_accuracy_pct", "test_loss", "train_time_s", "accuracy_per_second", "loss_per_second",
    "layers", "test_accuracy_ci95_low_pct", "test_accuracy_ci95_high_pct", "test_accuracy_group_ci95_low_pct",
    "test_accuracy_group_ci95_high_pct", "test_groups", "seeds", "test_accuracy_std_pct",
    "macro_f1", "balanced_accuracy", "balanced_accuracy_ci95_low", "balanced_accuracy_ci95_high",
    "balanced_accuracy_group_ci95_low", "balanced_accuracy_group_ci95_high", "macro_auc", "macro_auc_ci95_low",
    "macro_auc_ci95_high", "macro_auc_group_ci95_low", "macro_auc_group_ci95_high", "ece", "ece_temperature_scaled",
    "accuracy_vs_best_pct",
    "accuracy_vs_best_ci95_low_pct", "accuracy_vs_best_ci95_high_pct", "mcnemar_p_vs_best", "mcnemar_p_holm",
    "accuracy_vs_best_group_ci95_low_pct", "accuracy_vs_best_group_ci95_high_pct", "p_vs_best_groups",
    "p_vs_best_groups_holm",
    "params", "flops_per_image", "images_per_second", "compile_time_s", "device", "dtype", "init", "data",
]
FIGURES = ["accuracy_vs_time", "confusion_matrices", "training_curves", "per_class_recall", "roc_curves",
           "reliability_diagrams"]


def _write_study(runs_dir, *, synthetic):
    for seed in (0, 1, 2):
        write_results(runs_dir / "multi" / f"seed_{seed}" / "results.json",
                      make_results("multi", seed=seed, accuracy=0.7, synthetic=synthetic))
    write_results(runs_dir / "strong" / "results.json",
                  make_results("strong", accuracy=0.95, synthetic=synthetic, title="Strong | net"))
    write_results(runs_dir / "elsewhere" / "results.json",
                  make_results("elsewhere", accuracy=0.6, tile_prefix="other", synthetic=synthetic))
    sparse = make_results("sparse", accuracy=0.4, synthetic=synthetic)
    for key in ("test_predictions", "history", "confusion_matrix", "macro_f1", "layers"):
        del sparse[key]
    sparse.update(flops_per_image=None, test_loss=None)
    write_results(runs_dir / "sparse" / "results.json", sparse)


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    _write_study(runs_dir, synthetic=True)
    return write_report(runs_dir, runs_dir / "report_out")


def _md_tables(md_text):
    """{heading: (headers, [cells of each line])} of the Markdown tables under TABLE_HEADERS' headings."""
    all_lines = md_text.splitlines()
    split = lambda line: [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
    tables = {}
    for heading in TABLE_HEADERS:
        start = all_lines.index(f"## {heading}") + 2
        lines = list(itertools.takewhile(lambda line: line.startswith("|"), all_lines[start:]))
        assert lines and all(len(split(line)) == len(split(lines[0])) for line in lines)
        tables[heading] = split(lines[0]), [split(line) for line in lines[2:]]
    return tables


def _md_table(md_text):
    """(headers, {name: {header: cell}}) of the report's tables joined by row name; escaped pipes stay in cells."""
    headers, by_name = [], {}
    for table_headers, lines in _md_tables(md_text).values():
        headers += [h for h in table_headers if h != "Name"]
        for cells in lines:
            row = dict(zip(table_headers, cells))
            name = re.search(r"`([^`]+)`\)?$", row.get("Name") or row["Name (title)"]).group(1)
            by_name.setdefault(name, {}).update(row)
    return headers, by_name


def test_returns_every_output_in_out_dir(synthetic_report):
    assert set(synthetic_report) == {"md", "csv", "json", "tex", *FIGURES}
    names = {key: path.name for key, path in synthetic_report.items()}
    assert names["md"] == "report.md" and names["csv"] == "report.csv" and names["json"] == "report.json"
    assert all(path.parent.name == "report_out" for path in synthetic_report.values())


def test_markdown_columns_in_stated_order(synthetic_report):
    tables = _md_tables(synthetic_report["md"].read_text())
    assert {heading: headers for heading, (headers, _) in tables.items()} == TABLE_HEADERS
    assert all(len(lines) == 4 for _, lines in tables.values())  # every row in every table


def test_csv_and_json_columns_in_stated_order(synthetic_report):
    with synthetic_report["csv"].open(newline="") as stream:
        csv_rows = list(csv.DictReader(stream))
    header = list(csv_rows[0])
    assert header[: len(ROW_KEYS)] == ROW_KEYS and "data" in header
    report = json.loads(synthetic_report["json"].read_text())
    assert report["columns"][: len(ROW_KEYS)] == ROW_KEYS
    for row in report["rows"]:
        assert list(row)[: len(ROW_KEYS)] == ROW_KEYS
    assert [r["name"] for r in csv_rows] == [r["name"] for r in report["rows"]]


def test_json_holds_numbers_and_markdown_formats_them(synthetic_report):
    report = json.loads(synthetic_report["json"].read_text())
    rows = {row["name"]: row for row in report["rows"]}
    _, md_rows = _md_table(synthetic_report["md"].read_text())
    multi = rows["multi"]
    assert isinstance(multi["test_accuracy_pct"], float) and multi["seeds"] == 3
    assert md_rows["multi"]["Test accuracy (%)"] == f"{multi['test_accuracy_pct']:.2f}"
    assert md_rows["multi"]["Macro AUC"] == f"{multi['macro_auc']:.3f}"  # the mean over seeds
    low, high = multi["balanced_accuracy_ci95_low"], multi["balanced_accuracy_ci95_high"]
    assert 0 <= low < high <= 1 and md_rows["multi"]["95% CI of balanced accuracy"] == f"[{low:.3f}, {high:.3f}]"
    assert md_rows["multi"]["Test accuracy mean ± std (%)"] == (
        f"{multi['test_accuracy_pct']:.2f} ± {multi['test_accuracy_std_pct']:.2f}"
    )
    assert md_rows["strong"]["Test accuracy mean ± std (%)"] == "—"
    low, high = multi["test_accuracy_ci95_low_pct"], multi["test_accuracy_ci95_high_pct"]
    assert md_rows["multi"]["95% CI of test accuracy (%)"] == f"[{low:.2f}, {high:.2f}]"


def test_mcnemar_column_and_footnote(synthetic_report):
    md_text = synthetic_report["md"].read_text()
    _, md_rows = _md_table(md_text)
    rows = {row["name"]: row for row in json.loads(synthetic_report["json"].read_text())["rows"]}
    assert md_rows["strong"]["McNemar p vs best"] == "—"
    assert md_rows["multi"]["McNemar p vs best"] == f"{rows['multi']['mcnemar_p_vs_best']:.3g}"
    marker = re.fullmatch(r"n/a (\[\d+\])", md_rows["elsewhere"]["McNemar p vs best"]).group(1)
    footnote = next(line for line in md_text.splitlines() if line.startswith(marker))
    assert "tested on other tiles" in footnote
    assert rows["elsewhere"]["mcnemar_p_vs_best"] is None
    multi = rows["multi"]
    assert md_rows["multi"]["Accuracy vs best, paired (pp, 95% CI)"] == (
        f"{multi['accuracy_vs_best_pct']:+.2f} [{multi['accuracy_vs_best_ci95_low_pct']:+.2f}, "
        f"{multi['accuracy_vs_best_ci95_high_pct']:+.2f}]")
    assert md_rows["multi"]["McNemar p, Holm-adjusted"] == f"{multi['mcnemar_p_holm']:.3g}"
    for column in ("Accuracy vs best, paired (pp, 95% CI)", "McNemar p, Holm-adjusted"):
        assert md_rows["strong"][column] == "—" and md_rows["elsewhere"][column] == f"n/a {marker}"
    assert "**Not one test set**: these rows were tested on 2 different test sets" in md_text


def test_missing_optional_fields_print_na(synthetic_report):
    _, md_rows = _md_table(synthetic_report["md"].read_text())
    sparse = md_rows["sparse"]
    for header in ("Test avg loss", "Layers", "FLOPs / image", "Macro-F1", "95% CI of test accuracy (%)"):
        assert sparse[header] == "n/a", header
    with synthetic_report["csv"].open(newline="") as stream:
        csv_sparse = next(r for r in csv.DictReader(stream) if r["name"] == "sparse")
    assert csv_sparse["flops_per_image"] == "n/a"
    assert next(r for r in json.loads(synthetic_report["json"].read_text())["rows"] if r["name"] == "sparse")[
        "flops_per_image"
    ] is None


def test_markdown_counts_rows_and_files(synthetic_report, tmp_path):
    assert "4 rows from 6 results.json files under" in synthetic_report["md"].read_text()
    write_results(tmp_path / "only" / "results.json", make_results("only"))
    assert "1 row from 1 results.json file under" in write_report(tmp_path)["md"].read_text()


def test_rows_timed_on_one_device_need_no_device_note(synthetic_report):
    md_text = synthetic_report["md"].read_text()
    assert "Not one device" not in md_text
    assert {cells["Device"] for cells in _md_table(md_text)[1].values()} == {"cpu, float32"}


def test_markdown_explains_depth_and_escapes_titles(synthetic_report):
    md_text = synthetic_report["md"].read_text()
    assert "weight layers: conv + dense" in md_text
    _, md_rows = _md_table(md_text)
    assert md_rows["strong"]["Name (title)"] == "Strong \\| net (`strong`)"


def _png_description(path):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
        return image.text.get("Description", "")


def test_figures_are_valid_pngs(synthetic_report):
    for key in FIGURES:
        path = synthetic_report[key]
        assert path.stat().st_size > 1000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        _png_description(path)


def test_synthetic_marking_in_every_output(synthetic_report):
    md_text = synthetic_report["md"].read_text()
    assert BANNER in md_text.splitlines()[2]  # banner right under the title
    with synthetic_report["csv"].open(newline="") as stream:
        assert {r["data"] for r in csv.DictReader(stream)} == {"synthetic"}
    report = json.loads(synthetic_report["json"].read_text())
    assert report["synthetic"] is True and report["banner"] == BANNER
    assert {r["data"] for r in report["rows"]} == {"synthetic"}
    for key in FIGURES:
        assert _png_description(synthetic_report[key]) == BANNER


def test_real_data_has_no_synthetic_banner(tmp_path):
    write_results(tmp_path / "a" / "results.json", make_results("a", synthetic=False))
    outputs = write_report(tmp_path)
    assert outputs["md"].parent == tmp_path  # out_dir defaults to runs_dir
    assert "SYNTHETIC" not in outputs["md"].read_text()
    report = json.loads(outputs["json"].read_text())
    assert report["synthetic"] is False and report["rows"][0]["data"] == "kather2016"
    assert all(_png_description(outputs[key]) != BANNER for key in FIGURES)


def test_report_imports_no_jax_flax_or_models():
    code = (
        "import sys, flaxbench.report, flaxbench.metrics; "
        "print(sorted(m for m in ('jax', 'flax', 'torch', 'flaxbench.models') if m in sys.modules))"
    )
    repo_root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo_root)
    assert result.stdout.strip() == "[]"


def test_per_class_tables_pool_the_seeds(synthetic_report, tmp_path_factory):
    from flaxbench import metrics
    from tests.report.factory import CLASSES, make_results

    text = synthetic_report["md"].read_text()
    assert "## Per class" in text and "### F1" in text and "### One-vs-rest ROC AUC" in text
    report = json.loads(synthetic_report["json"].read_text())
    seeds = [make_results("multi", seed=seed, accuracy=0.7, synthetic=True) for seed in (0, 1, 2)]
    pooled = np.sum([np.asarray(r["confusion_matrix"]) for r in seeds], axis=0)
    expected = metrics.per_class_metrics(pooled, CLASSES)
    for name in CLASSES:
        assert report["per_class"]["multi"][name]["f1"] == pytest.approx(expected[name]["f1"])
        assert report["per_class"]["multi"][name]["auc"] == pytest.approx(np.mean([r["per_class"][name]["auc"]
                                                                                   for r in seeds]))
        for key in ("precision", "recall", "f1", "specificity", "auc"):  # each value inside its 95% CI
            values = report["per_class"]["multi"][name]
            assert values[f"{key}_ci"][0] <= values[key] <= values[f"{key}_ci"][1], (name, key)
    first = report["per_class"]["multi"][CLASSES[0]]
    for section, key in (("### F1", "f1"), ("### Specificity", "specificity"), ("### Precision (PPV)", "precision")):
        table = text.split(section)[1].split("###")[0]
        row = next(line for line in table.splitlines() if line.startswith("| `multi`"))
        low, high = first[f"{key}_ci"]
        assert row.split("|")[2].strip() == f"{expected[CLASSES[0]][key]:.3f} ({low:.3f}–{high:.3f})"


def test_the_ci_over_patients_is_a_column_only_where_a_row_was_split_by_them(synthetic_report, tmp_path):
    assert "over patients" not in synthetic_report["md"].read_text()  # no row split by group: no column
    assert "over patients" not in synthetic_report["tex"].read_text()
    grouped, few = make_results("grouped", accuracy=0.8, num_tiles=120), make_results("few", accuracy=0.7)
    grouped["group_by"], few["group_by"] = r"test_\d*?(\d)\.tif", r"(test)_"  # 10 test groups, 1
    second = make_results("second", accuracy=0.6, num_tiles=120)
    second["group_by"] = grouped["group_by"]
    for results in (grouped, few, second, make_results("plain", accuracy=0.4)):
        write_results(tmp_path / results["name"] / "results.json", results)
    paths = write_report(tmp_path)
    text = paths["md"].read_text()
    study = text.splitlines()[text.splitlines().index("## The study's table") + 2:]
    headers = [cell.strip() for cell in study[0].strip("|").split("|")]
    column = headers.index("95% CI over patients or slides (%, groups)")
    assert column == headers.index("95% CI of test accuracy (%)") + 1
    cells = {line.split("`")[1]: [c.strip() for c in line.strip("|").split("|")][column] for line in study[2:6]}
    assert re.fullmatch(r"\[\d+\.\d\d, \d+\.\d\d\] over 10", cells["grouped"])
    assert re.fullmatch(r"n/a \(1 group\) \[\d\]", cells["few"]) and cells["plain"] == "—"
    assert "the row's test tiles come from one patient or slide" in text
    assert "**95% CI over patients or slides**" in text and "over patients or slides" in paths["tex"].read_text()
    assert "- Obuchowski NA. Nonparametric analysis of clustered ROC curve data." in text  # cited for these rows
    statistics = text.splitlines()[text.splitlines().index("## Statistics") + 2:]
    headers = [cell.strip() for cell in statistics[0].strip("|").split("|")]
    assert headers[-2:] == ["Accuracy vs best over patients or slides (pp, 95% CI)",
                            "p vs best over patients or slides (Holm-adjusted)"]
    cells = {line.split("`")[1]: [c.strip() for c in line.strip("|").split("|")][-2:] for line in statistics[2:6]}
    assert cells["grouped"] == ["—", "—"] and cells["plain"] == ["—", "—"]  # the best row; a row split by tile
    assert all(re.fullmatch(r"n/a \[\d\]", cell) for cell in cells["few"])  # one group: no spread to see
    assert re.fullmatch(r"-\d+\.\d\d \[-\d+\.\d\d, [-+]\d+\.\d\d\]", cells["second"][0])
    assert re.fullmatch(r"[\d.e-]+ \([\d.e-]+\)", cells["second"][1])
    for name in ("balanced accuracy", "macro AUC"):  # each beside its tile-level CI, which it contains
        column = headers.index(f"95% CI of {name} over patients or slides (groups)")
        assert column == headers.index(f"95% CI of {name}") + 1
        cells = {line.split("`")[1]: [c.strip() for c in line.strip("|").split("|")] for line in statistics[2:6]}
        tiles, groups = (re.fullmatch(r"\[(\S+), (\S+)\]( over 10)?", cells["grouped"][k]).groups()
                         for k in (column - 1, column))
        assert groups[2] and float(groups[0]) <= float(tiles[0]) <= float(tiles[1]) <= float(groups[1])
        assert re.fullmatch(r"n/a \(1 group\) \[\d\]", cells["few"][column]) and cells["plain"][column] == "—"


def test_the_report_ends_with_the_full_citation_of_each_method_its_notes_name(synthetic_report):
    text = synthetic_report["md"].read_text()
    references = text[text.index("## References"):].splitlines()[2:]
    assert references[0].startswith("- Wilson EB. Probable inference") and len(references) == len(set(references))
    for author in ("Newcombe RG", "Zou GY", "Hanley JA", "DeLong ER", "McNemar Q", "Holm S", "Guo C"):
        assert any(line.startswith(f"- {author}") for line in references), author
    assert "Obuchowski" not in text and "Korn EL" not in text  # no row split by patient: nothing over groups


def test_the_figure_draws_a_rows_ci_over_its_patients_where_it_has_one(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from flaxbench.report.collect import collect_runs
    from flaxbench.report.figures import accuracy_vs_time, per_class_recall
    from flaxbench.report.summary import summarize

    grouped = make_results("grouped", accuracy=0.8, num_tiles=120)
    grouped["group_by"] = r"test_\d*?(\d)\.tif"
    for results in (grouped, make_results("plain", accuracy=0.5)):
        write_results(tmp_path / results["name"] / "results.json", results)
    drawn = []
    errorbar = Axes.errorbar
    monkeypatch.setattr(Axes, "errorbar", lambda self, x, y, yerr=None, **kw: drawn.append((y[0], yerr)) or errorbar(
        self, x, y, yerr=yerr, **kw))
    summary = summarize(collect_runs(tmp_path))
    accuracy_vs_time(summary, tmp_path / "figure.png")
    for row, (y, yerr) in zip(summary.rows, drawn, strict=True):
        kind = "group_ci95" if row["name"] == "grouped" else "ci95"
        assert (y - yerr[0][0], y + yerr[1][0]) == pytest.approx(
            (row[f"test_accuracy_{kind}_low_pct"], row[f"test_accuracy_{kind}_high_pct"]))
    bars = []
    bar = Axes.bar
    monkeypatch.setattr(Axes, "bar", lambda self, x, heights, yerr=None, **kw: bars.append((heights, yerr)) or bar(
        self, x, heights, yerr=yerr, **kw))
    per_class_recall(summary, tmp_path / "recall.png")  # each class's recall over the slides holding its tiles
    for row, table, (heights, yerr) in zip(summary.rows, summary.per_class, bars, strict=True):
        key = "recall_ci_groups" if row["name"] == "grouped" else "recall_ci"
        drawn_intervals = [(h - below, h + above) for h, below, above in zip(heights, yerr[0], yerr[1])]
        assert np.ravel(drawn_intervals) == pytest.approx(np.ravel([values[key] for values in table.values()]))
