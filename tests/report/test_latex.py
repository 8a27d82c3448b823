"""report.tex: the report's tables in LaTeX, special characters escaped, the same cells as report.md."""

from __future__ import annotations

import re

from flaxbench.report import write_report
from flaxbench.report.latex import cell, escape
from tests.report.factory import make_results, write_results


def test_special_characters_are_escaped_and_code_and_footnotes_kept():
    assert escape("50% of A&B_c #1 {x} ~ ^ \\ $") == (r"50\% of A\&B\_c \#1 \{x\} \textasciitilde{} "
                                                        r"\textasciicircum{} \textbackslash{} \$")
    assert escape("70.0 ± 2.0 (60.0–80.0) —") == r"70.0 $\pm$ 2.0 (60.0--80.0) ---"
    assert cell("ViT (`vit_p15`)") == r"ViT (\texttt{vit\_p15})"
    assert cell("30.00 [1]") == r"30.00\textsuperscript{1}"
    assert cell("[14.55, 51.90]") == "[14.55, 51.90]"  # an interval, not a footnote


def _tables(tex: str) -> list[list[list[str]]]:
    """The body rows of each tabular, as lists of cells."""
    tables = []
    for body in re.findall(r"\\midrule\n(.*?)\n\\bottomrule", tex, flags=re.S):
        tables.append([line.removesuffix(r" \\").split(" & ") for line in body.splitlines()])
    return tables


def test_report_tex_holds_the_three_tables_with_every_row(tmp_path):
    write_results(tmp_path / "vit_p15" / "results.json", make_results("vit_p15", accuracy=0.9, title="ViT 50% & more"))
    write_results(tmp_path / "net" / "results.json", make_results("net", accuracy=0.6))
    paths = write_report(tmp_path, tmp_path / "out")
    tex, markdown = paths["tex"].read_text(), paths["md"].read_text()
    assert [caption for caption in re.findall(r"\\caption\{(.*?)\}", tex)] == [
        f"{title} (synthetic data)" for title in ("The study's table", "Statistics", "Cost and provenance",
                                                  "Per class: F1", "Per class: Recall (sensitivity)",
                                                  "Per class: Precision (PPV)", "Per class: Specificity",
                                                  "Per class: One-vs-rest ROC AUC")]
    study, statistics, provenance, f1, *_ = _tables(tex)
    assert [row[0] for row in study] == [r"ViT 50\% \& more (\texttt{vit\_p15})", r"net title (\texttt{net})"]
    assert [row[0] for row in statistics] == [r"\texttt{vit\_p15}", r"\texttt{net}"]
    assert all(len(row) == 10 for row in study) and all(len(row) == 8 for row in provenance)
    # the same numbers as report.md, e.g. the accuracy CI of the best row
    interval = re.search(r"\| ViT 50% & more \(`vit_p15`\) \|(?:[^|]*\|){6} (\[[\d., ]+\]) \|", markdown).group(1)
    assert study[0][7] == interval
    assert r"\begin{tabular}{lrrrrrrrrr}" in tex and tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 8
    # per class: a column per class, each cell as report.md's, en dash as LaTeX's
    f1_line = next(line for line in markdown.splitlines()[markdown.splitlines().index("### F1"):]
                   if line.startswith("| `vit_p15` |"))
    assert f1[0] == [cell(text.strip()) for text in f1_line.strip("|").split("|")] and len(f1[0]) == 7
    assert "--" in f1[0][1]
