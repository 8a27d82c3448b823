"""Comparison report of a study: reads results.json files only (no jax, flax or models)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from flaxbench.errors import FlaxbenchError
from flaxbench.report.collect import collect_runs, find_unfinished_runs, run_failure
from flaxbench.report.figures import write_figures
from flaxbench.report.latex import write_latex
from flaxbench.report.summary import summarize
from flaxbench.report.table import write_csv, write_json, write_markdown
from flaxbench.workdir import REPORT_OUTPUTS

__all__ = ["write_report"]


def write_report(runs_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write report.md/.csv/.json/.tex and the PNG figures (and an external one) for every results.json under
    `runs_dir`.

    `out_dir` defaults to `runs_dir`; returns {"md", "csv", "json", "tex", <figure keys>: path}.
    """
    runs_dir = Path(runs_dir)
    out_dir = runs_dir if out_dir is None else Path(out_dir)
    unfinished = find_unfinished_runs(runs_dir)
    failed = tuple((str(path.relative_to(runs_dir)), error) for path in unfinished if (error := run_failure(path)))
    summary = dataclasses.replace(summarize(collect_runs(runs_dir)), failed=failed,
                                  unfinished=tuple(str(path.relative_to(runs_dir)) for path in unfinished))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FlaxbenchError(
            f"cannot create report directory '{out_dir}' ({err.strerror}); pass another --out"
        ) from None
    figures = write_figures(summary, out_dir)
    written = {
        "md": write_markdown(summary, out_dir / "report.md", runs_dir, figures),
        "csv": write_csv(summary, out_dir / "report.csv"),
        "json": write_json(summary, out_dir / "report.json", runs_dir),
        "tex": write_latex(summary, out_dir / "report.tex", runs_dir),
    }
    for name in REPORT_OUTPUTS:  # a figure an earlier report drew and this one does not (no external set now)
        if out_dir / name not in {*written.values(), *figures.values()}:
            (out_dir / name).unlink(missing_ok=True)
    return {**written, **figures}
