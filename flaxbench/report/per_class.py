"""The report's per-class tables: F1, recall, precision, specificity and AUC of each row and class, with CIs."""

from __future__ import annotations

from typing import Any

from flaxbench.group_intervals import MIN_GROUPS
from flaxbench.report.summary import Summary

PER_CLASS_SECTIONS = (("f1", "F1"), ("recall", "Recall (sensitivity)"), ("precision", "Precision (PPV)"),
                      ("specificity", "Specificity"), ("auc", "One-vs-rest ROC AUC"))


def _per_class_cell(values: dict[str, Any] | None, key: str) -> str:
    """'0.912 (0.871–0.945)': a class's value with its 95% CI where recorded, and '0.912 (0.871–0.945; 0.802–0.970
    over 6)' with its CI over patients or slides too; a dash where the row has no value."""
    if values is None or values.get(key) is None:
        return "—"
    interval, groups = values.get(f"{key}_ci"), values.get(f"{key}_groups")
    if groups is None:
        over_groups = ""
    elif (found := values.get(f"{key}_ci_groups")) is None:
        over_groups = f"; {groups} group{'s' if groups != 1 else ''}"
    else:
        over_groups = f"; {found[0]:.3f}–{found[1]:.3f} over {groups}"
    return f"{values[key]:.3f}" + (f" ({interval[0]:.3f}–{interval[1]:.3f}{over_groups})" if interval else "")


def per_class_tables(summary: Summary) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, cells of each line) of the F1, recall, precision, specificity and AUC tables with their
    CIs, a line per row and a column per class (classes in first-seen order); none without per-class values."""
    tables = [(row, table) for row, table in zip(summary.rows, summary.per_class) if table]
    classes = list(dict.fromkeys(name for _, table in tables for name in table))
    if not classes:
        return []
    return [(title, ["Name", *classes],
             [[f"`{row['name']}`", *(_per_class_cell(table.get(c), key) for c in classes)] for row, table in tables])
            for key, title in PER_CLASS_SECTIONS]


def per_class_sections(summary: Summary) -> list[str]:
    """Markdown sections of per_class_tables, under what their CIs are."""
    tables = per_class_tables(summary)
    if not tables:
        return []
    lines = ["", "## Per class", "",
             "Test tiles of all seeds (and folds) pooled (AUC: the mean over the seeds' and folds' own). 95% CI in "
             "brackets: for recall, "
             "precision and specificity, proportions of tiles, the Wilson score interval (over the class's tiles, "
             "the tiles predicted as it, or the other tiles; seeds pooled, counted as one tile each); for F1 the "
             "Wilson interval of the share of true positives among the tiles that are the class or are predicted as "
             "it (its Jaccard index J; F1 = 2J / (1 + J)); for AUC a score interval, the AUCs within 1.96 of their "
             "own standard errors (Hanley and McNeil's variance for the class's tiles and the others) of the value. "
             "None of them collapses to 1.000 (1.000–1.000) where every tile "
             "is right, as a percentile bootstrap does. "
             "A dash where a row has no such class or did not record the value; no CI where it "
             "did not record per-tile predictions or where the value is undefined "
             "(precision of a class never predicted, shown as 0)."]
    if any("recall_groups" in values for _, table in zip(summary.rows, summary.per_class) if table
           for values in table.values()):
        lines[-1] += (" For rows grouped by patient or slide (as the study's table's CI over them is), each "
                      "value's interval over patients or slides "
                      "follows a semicolon, with how many groups it is over (none from fewer than "
                      f"{MIN_GROUPS}): recall's, precision's and specificity's as the study's table's is for accuracy, "
                      "over the groups holding the class's tiles, the tiles predicted as it, or the other tiles, "
                      "and F1's so (through J) over the groups holding either; AUC's over all test groups, the score "
                      "interval with its variance times the design effect of Obuchowski's clustered DeLong variance "
                      "(at least 1) and t of groups − 1 degrees of freedom in place of 1.96.")
    for title, headers, body in tables:
        lines += ["", f"### {title}", "", "| " + " | ".join(headers) + " |",
                  "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines
