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


# Characters a line of a header or body cell holds before it wraps: the tables' natural width stays near a page's,
# so \resizebox shrinks the type little or not at all.
HEADER_WIDTH, CELL_WIDTH = 12, 22


def _word_parts(word: str, width: int) -> list[str]:
    """A word longer than a line of `width` characters, split after each '/' (a path) and '-', else the word."""
    return re.findall(r".[^/-]*[/-]|.[^/-]*$", word) if len(word) > width else [word]


def _atoms(markdown: str, width: int) -> list[tuple[str, str | None]]:
    """(piece, what joins it to the one before: " ", "" where a line may break without a space, None where it may
    not) of a Markdown cell: its words and `code` spans, one longer than `width` in parts."""
    atoms: list[tuple[str, str | None]] = []
    space = False
    for k, part in enumerate(markdown.split("`")):
        if k % 2:  # code: one piece, or a long path's parts, each in backticks
            atoms += [(f"`{piece}`", "" if j else " " if space else None)
                      for j, piece in enumerate(_word_parts(part, width))]
            space = False
            continue
        for match in re.finditer(r"(\s*)(\S+)", part):
            atoms += [(piece, "" if j else " " if space or match.group(1) else None)
                      for j, piece in enumerate(_word_parts(match.group(2), width))]
            space = False
        space = part.endswith(" ") or (space and not part)
    return atoms


def wrapped(markdown: str, width: int, *, at_parentheses: bool = True) -> list[str]:
    """A Markdown cell as lines of about `width` characters; a semicolon ends a line and, `at_parentheses`, an
    opening parenthesis starts one (a value above its interval)."""
    lines: list[str] = []
    for atom, joint in _atoms(markdown, width):
        if not lines:
            lines.append(atom)
            continue
        joined = lines[-1] + (joint or "") + atom
        if joint is not None and (lines[-1].endswith(";") or at_parentheses and joint and atom.startswith("(")
                                  or len(joined.replace("`", "")) > width):
            lines.append(atom)
        else:
            lines[-1] = joined
    return lines or [""]


def stacked(lines: list[str], align: str, vertical: str) -> str:
    """LaTeX lines as one cell: a tabular within the cell where there are several."""
    if len(lines) == 1:
        return lines[0]
    return (rf"\begin{{tabular}}[{vertical}]{{@{{}}{align}@{{}}}}" + r" \\ ".join(lines) + r"\end{tabular}")


def _fewer_columns(headers: list[str], body: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """A per-class table (a line per row, a column per class) turned to a line per class where it has more classes
    than rows, so that it is narrow enough to read."""
    if len(headers) - 1 <= len(body):
        return headers, body
    return ["Class", *(line[0] for line in body)], [[name, *(line[k] for line in body)]
                                                     for k, name in enumerate(headers[1:], start=1)]


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
    tables += [(f"Per class: {title}", *_fewer_columns(headers, body))
               for title, headers, body in per_class_tables(summary)]
    if summary.external:
        tables.append(("External test sets", EXTERNAL_HEADERS, [external_cells(line) for line in summary.external]))
    for title, headers, body in tables:
        lines += ["", r"\begin{table}[htbp]", r"\centering", r"\caption{" + escape(title)
                  + (" (synthetic data)" if summary.synthetic else "") + "}",
                  # shrunk to the line's width only where wider
                  r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
                  r"\begin{tabular}{l" + "r" * (len(headers) - 1) + "}", r"\toprule",
                  " & ".join(stacked([cell(line) for line in wrapped(header, HEADER_WIDTH, at_parentheses=False)],
                                     "r" if k else "l", "b") for k, header in enumerate(headers)) + r" \\",
                  r"\midrule"]
        lines += [" & ".join(stacked([cell(line) for line in wrapped(text, CELL_WIDTH)], "r" if k else "l", "t")
                             for k, text in enumerate(cells)) + r" \\" for cells in body]
        lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    if footnotes.texts:
        lines += ["", r"\begin{itemize}", r"\sloppy"] + [rf"\item[\textsuperscript{{{k}}}] {escape(text)}."
                                            for k, text in enumerate(footnotes.texts, start=1)] + [r"\end{itemize}"]
    return "\n".join(lines) + "\n"


def write_latex(summary: Summary, path: Path, runs_dir: Path) -> Path:
    """Write report.tex to `path`."""
    path.write_text(latex(summary, runs_dir), encoding="utf-8")
    return path
