"""report.tex: the report's tables in LaTeX, special characters escaped, the same cells as report.md."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from flaxbench.report import write_report
from flaxbench.report.latex import cell, escape, stacked, wrapped
from tests.report.factory import make_results, write_results


def test_special_characters_are_escaped_and_code_and_footnotes_kept():
    assert escape("50% of A&B_c #1 {x} ~ ^ \\ $") == (r"50\% of A\&B\_c \#1 \{x\} \textasciitilde{} "
                                                        r"\textasciicircum{} \textbackslash{} \$")
    assert escape("70.0 ± 2.0 (60.0–80.0) —") == r"70.0 $\pm$ 2.0 (60.0--80.0) ---"
    assert cell("ViT (`vit_p15`)") == r"ViT (\texttt{vit\_p15})"
    assert cell("30.00 [1]") == r"30.00\textsuperscript{1}"
    assert cell("[14.55, 51.90]") == "[14.55, 51.90]"  # an interval, not a footnote


def _cell_lines(cell_tex: str) -> list[str]:
    """The lines of a report.tex cell: one, or those of the tabular it is stacked in."""
    stacked = re.fullmatch(r"\\begin\{tabular\}\[[tb]\]\{@\{\}[lr]@\{\}\}(.*)\\end\{tabular\}", cell_tex)
    return stacked.group(1).split(r" \\ ") if stacked else [cell_tex]


def _tables(tex: str) -> list[list[list[str]]]:
    """The body rows of each tabular, as lists of cells, a stacked cell's lines joined by spaces."""
    tables = []
    for body in re.findall(r"\\midrule\n(.*?)\n\\bottomrule", tex, flags=re.S):
        tables.append([[" ".join(_cell_lines(cell_tex)) for cell_tex in line.removesuffix(r" \\").split(" & ")]
                       for line in body.splitlines()])
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
    # per class: each cell as report.md's, en dash as LaTeX's; six classes of two rows turned to a line per class
    f1_line = next(line for line in markdown.splitlines()[markdown.splitlines().index("### F1"):]
                   if line.startswith("| `vit_p15` |"))
    classes = re.search(r"\| Name \|(.*)\|\n\|---", markdown[markdown.index("### F1"):]).group(1).split("|")
    assert [line[0] for line in f1] == [cell(name.strip()) for name in classes] and len(f1) == 6
    assert [line[1] for line in f1] == [cell(text.strip()) for text in f1_line.strip("|").split("|")[1:]]
    assert "--" in f1[0][1] and r"Class & \texttt{vit\_p15} & \texttt{net} \\" in tex


def test_per_class_tables_keep_a_line_per_row_where_the_rows_are_as_many_as_the_classes(tmp_path):
    names = [f"net{k}" for k in range(6)]  # and six classes
    for k, name in enumerate(names):
        write_results(tmp_path / name / "results.json", make_results(name, accuracy=0.5 + 0.05 * k))
    tex = write_report(tmp_path, tmp_path / "out")["tex"].read_text()
    f1 = _tables(tex)[3]
    assert sorted(line[0] for line in f1) == [rf"\texttt{{{name}}}" for name in names] and len(f1[0]) == 7


def test_long_cells_wrap_into_stacked_lines_so_tables_keep_a_readable_size():
    assert wrapped("23.8 (10.6–45.1; 7.7–53.9 over 9 groups)", 22) == [
        "23.8", "(10.6–45.1;", "7.7–53.9 over 9", "groups)"]  # the value above its intervals
    assert wrapped("0.333 (0.132–0.622)", 22) == ["0.333", "(0.132–0.622)"]
    assert wrapped("[14.55, 51.90]", 22) == ["[14.55, 51.90]"] and wrapped("30.00 [1]", 22) == ["30.00 [1]"]
    # a long path breaks after its slashes, each line's code span closed on it
    assert wrapped("`/work/shared/data/kather2016_sample` (central 224 px)", 22) == [
        "`/work/``shared/``data/`", "`kather2016_sample`", "(central 224 px)"]
    assert wrapped("folder:/work/shared/data/nct_crc_he_sample", 22) == [
        "folder:/work/shared/", "data/nct_crc_he_sample"]
    assert wrapped("Accuracy per second (%/s)", 14, at_parentheses=False) == ["Accuracy per", "second (%/s)"]
    assert wrapped("Seeds (n)", 14, at_parentheses=False) == ["Seeds (n)"]
    assert wrapped("McNemar p, Holm-adjusted", 12, at_parentheses=False) == ["McNemar p,", "Holm-", "adjusted"]
    assert wrapped("-30.00 [-43.94, -14.37]", 22) == ["-30.00 [-43.94,", "-14.37]"]  # minus signs kept
    assert stacked(["a"], "r", "t") == "a"
    assert stacked(["a", "b"], "r", "t") == r"\begin{tabular}[t]{@{}r@{}}a \\ b\end{tabular}"


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_report_tex_compiles_and_its_tables_shrink_to_no_less_than_half_size(tmp_path):
    write_results(tmp_path / "vit_p15" / "results.json", make_results("vit_p15", accuracy=0.9, title="ViT 50% & more"))
    write_results(tmp_path / "net" / "results.json", make_results("net", accuracy=0.6))
    paths = write_report(tmp_path, tmp_path / "out")
    # \resizebox logs the natural width of what it would shrink (to the line's 345pt) and leaves it as it is
    (tmp_path / "paper.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n\\begin{document}\n"
        f"\\input{{{paths['tex']}}}\n"
        "\\renewcommand{\\resizebox}[3]{\\sbox0{#3}\\typeout{natural width \\the\\wd0}\\usebox0}\n"
        f"\\input{{{paths['tex']}}}\n\\end{{document}}\n")
    built = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:]
    widths = [float(width) for width in re.findall(r"natural width ([\d.]+)pt", built.stdout)]
    assert len(widths) == 8 and max(widths) < 2 * 345, widths  # before cells wrapped: up to 1,079pt
