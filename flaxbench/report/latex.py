"""report.tex: the report's tables as LaTeX (booktabs), to \\input into a paper."""

from __future__ import annotations

import re
from pathlib import Path

from flaxbench.report.external import EXTERNAL_HEADERS, external_cells
from flaxbench.report.per_class import per_class_tables
from flaxbench.report.summary import SYNTHETIC_BANNER, Summary
from flaxbench.report.table import TABLES, Footnotes

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEXT = {"±": r"$\pm$", "–": "--", "—": "---", "−": "-", "≥": r"$\geq$", "≤": r"$\leq$"}


def escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped and a few Unicode signs written as LaTeX."""
    escaped = "".join(_SPECIAL.get(char, char) for char in text)
    return "".join(_TEXT.get(char, char) for char in escaped)


def cell(markdown: str) -> str:
    """A Markdown table cell as LaTeX: `code` in typewriter type, footnote marks [k] as superscripts."""
    parts = markdown.split("`")
    text = "".join(r"\texttt{" + escape(part) + "}" if k % 2 else escape(part) for k, part in enumerate(parts))
    return re.sub(r" ?\[(\d+)\]", r"\\textsuperscript{\1}", text)


def latex(summary: Summary, runs_dir: Path) -> str:
    """report.tex: each table of report.md (the three, the per-class ones, the external test sets) in a table
    environment, the footnotes under them."""
    footnotes = Footnotes()
    rows = len(summary.rows)
    lines = [f"% flaxbench report: {rows} row{'s' if rows > 1 else ''} from {runs_dir}, best first; "
             "report.md defines the columns.",
             r"% Needs \usepackage{booktabs} and \usepackage{graphicx}."]
    if summary.synthetic:
        lines.append(f"% {SYNTHETIC_BANNER}.")
    if summary.unfinished:
        lines.append(f"% Not in the tables: {len(summary.unfinished)} run(s) without results.json: "
                     + ", ".join(summary.unfinished) + " (report.md).")
    shown = [(table.heading, table.shown_columns(summary.rows)) for table in TABLES]
    tables = [(heading, [column.header for column in columns],
               [[column.render(row, footnotes) for column in columns] for row in summary.rows])
              for heading, columns in shown]
    tables += [(f"Per class: {title}", headers, body) for title, headers, body in per_class_tables(summary)]
    if summary.external:
        tables.append(("External test sets", EXTERNAL_HEADERS, [external_cells(line) for line in summary.external]))
    for title, headers, body in tables:
        lines += ["", r"\begin{table}[htbp]", r"\centering", r"\caption{" + escape(title)
                  + (" (synthetic data)" if summary.synthetic else "") + "}",
                  r"\resizebox{\textwidth}{!}{%",
                  r"\begin{tabular}{l" + "r" * (len(headers) - 1) + "}", r"\toprule",
                  " & ".join(escape(header) for header in headers) + r" \\", r"\midrule"]
        lines += [" & ".join(cell(text) for text in cells) + r" \\" for cells in body]
        lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    if footnotes.texts:
        lines += ["", r"\begin{itemize}"] + [rf"\item[\textsuperscript{{{k}}}] {escape(text)}."
                                            for k, text in enumerate(footnotes.texts, start=1)] + [r"\end{itemize}"]
    return "\n".join(lines) + "\n"


def write_latex(summary: Summary, path: Path, runs_dir: Path) -> Path:
    """Write report.tex to `path`."""
    path.write_text(latex(summary, runs_dir), encoding="utf-8")
    return path
