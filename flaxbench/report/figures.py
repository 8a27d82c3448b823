"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no pyplot, no display)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from flaxbench import metrics
from flaxbench.report.collect import HISTORY_CURVES
from flaxbench.report.pooled import pooled_confusion_matrix, test_probabilities
from flaxbench.report.summary import SYNTHETIC_BANNER, Summary, mean_history
from flaxbench.workdir import REPORT_FIGURES

FIGURE_DPI = 110


def _color(index: int) -> str:
    """The colour of row `index`, the same in every figure."""
    return f"C{index % 10}"


def _new_figure(title: str, synthetic: bool, size: tuple[float, float]) -> Figure:
    """A figure whose title carries the synthetic-data banner when it applies."""
    figure = Figure(figsize=size, layout="constrained")
    if synthetic:
        figure.suptitle(f"{title}\n{SYNTHETIC_BANNER}", color="darkred", fontweight="bold")
    else:
        figure.suptitle(title)
    return figure


def _watermark(axes, synthetic: bool) -> None:
    if synthetic:
        axes.text(0.5, 0.5, "SYNTHETIC", transform=axes.transAxes, ha="center", va="center",
                  fontsize=36, rotation=25, color="darkred", alpha=0.08, zorder=0)


def _save(figure: Figure, path: Path, title: str, synthetic: bool) -> Path:
    """Save as PNG; the banner also goes into the PNG's text metadata."""
    description = SYNTHETIC_BANNER if synthetic else "flaxbench comparison report"
    figure.savefig(path, dpi=FIGURE_DPI, metadata={"Title": title, "Description": description})
    return path


def accuracy_vs_time(summary: Summary, path: Path) -> Path:
    """Test accuracy (%) vs training time (s) per row, CI error bars, compile time drawn apart."""
    title = "Test accuracy vs training time"
    figure = _new_figure(title, summary.synthetic, (8.5, 5.5))
    axes = figure.add_subplot()
    for i, row in enumerate(summary.rows):
        x, y, color = row["train_time_s"], row["test_accuracy_pct"], _color(i)
        if row["compile_time_s"]:
            axes.plot([x, x + row["compile_time_s"]], [y, y], color=color, alpha=0.3, linewidth=5,
                      solid_capstyle="butt", zorder=1)
        low, high = _accuracy_bar(row)
        yerr = None if low is None else [[max(y - low, 0.0)], [max(high - y, 0.0)]]
        axes.errorbar([x], [y], yerr=yerr, fmt="o", color=color, capsize=4, zorder=2)
        axes.annotate(row["label"], (x, y), xytext=(6, 6), textcoords="offset points", fontsize=8)
    devices = summary.devices
    on = f" on {devices[0]}" if len(devices) == 1 else ", rows timed on different devices" if devices else ""
    axes.set_xlabel(f"Training time (s){on}")
    axes.set_ylabel("Test accuracy (%)")
    axes.set_xlim(left=0)
    axes.grid(alpha=0.3)
    axes.legend(
        handles=[
            Line2D([], [], marker="o", color="0.3", linestyle="none",
                   label="test accuracy at training time (bars: 95% CI" + (
                       "; over patients or slides for the rows split by them)" if any(
                           row["test_accuracy_group_ci95_low_pct"] is not None for row in summary.rows) else ")")),
            Line2D([], [], color="0.3", alpha=0.3, linewidth=5,
                   label="compile time, drawn from training time to training + compile time"),
        ],
        loc="lower right", fontsize=8,
    )
    _watermark(axes, summary.synthetic)
    return _save(figure, path, title, summary.synthetic)


def _accuracy_bar(row: dict[str, Any]) -> tuple[float | None, float | None]:
    """The row's test accuracy CI to draw (%): over its patients or slides where it was split by them, as the
    honest one there, else over its tiles."""
    if row["test_accuracy_group_ci95_low_pct"] is not None:
        return row["test_accuracy_group_ci95_low_pct"], row["test_accuracy_group_ci95_high_pct"]
    return row["test_accuracy_ci95_low_pct"], row["test_accuracy_ci95_high_pct"]


def _row_normalised(cm: np.ndarray) -> np.ndarray:
    """Each true-class row divided by its count (recall on the diagonal); empty rows stay 0."""
    totals = cm.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(cm, totals, out=np.zeros(cm.shape, dtype=np.float64), where=totals > 0)


def _panel_grid(figure: Figure, count: int, num_cols: int) -> list:
    """`count` axes in rows of `num_cols`; the grid's unused cells are hidden."""
    num_rows = math.ceil(count / num_cols)
    grid = figure.subplots(num_rows, num_cols, squeeze=False).ravel()
    for axes in grid[count:]:
        axes.set_axis_off()
    return list(grid[:count])


def _not_recorded(axes, what: str) -> None:
    """Mark a row's panel as n/a: its results.json files do not hold `what`."""
    axes.text(0.5, 0.5, f"n/a: no {what}\nin results.json", ha="center", va="center")
    axes.set_axis_off()


def confusion_matrices(summary: Summary, path: Path) -> Path:
    """One row-normalised confusion matrix (summed over seeds) per report row."""
    title = "Confusion matrices (rows: true class, normalised; summed over seeds)"
    count = len(summary.rows)
    num_cols = min(3, count)
    num_rows = math.ceil(count / num_cols)
    num_classes = max(len(group.runs[0].results["classes"]) for group in summary.groups)
    cell = max(3.5, 0.45 * num_classes + 1.5)
    figure = _new_figure(title, summary.synthetic, (cell * num_cols + 1.0, (cell + 0.6) * num_rows + 0.8))
    panels = _panel_grid(figure, count, num_cols)
    image = None
    for axes, row, group in zip(panels, summary.rows, summary.groups):
        axes.set_title(row["label"], fontsize=9)
        cm = pooled_confusion_matrix(group)
        if cm is None:
            _not_recorded(axes, "confusion matrix")
            continue
        classes = group.runs[0].results["classes"]
        normalised = _row_normalised(cm)
        image = axes.imshow(normalised, vmin=0.0, vmax=1.0, cmap="Blues")
        ticks = np.arange(len(classes))
        axes.set_xticks(ticks, classes, rotation=45, ha="right", fontsize=8)
        axes.set_yticks(ticks, classes, fontsize=8)
        axes.set_xlabel("predicted", fontsize=8)
        axes.set_ylabel("true", fontsize=8)
        if len(classes) <= 12:
            for (r, c), value in np.ndenumerate(normalised):
                axes.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7,
                          color="white" if value > 0.6 else "black")
        _watermark(axes, summary.synthetic)
    if image is not None:
        figure.colorbar(image, ax=panels, shrink=0.6, label="fraction of true class")
    return _save(figure, path, title, summary.synthetic)


ROC_GRID = np.linspace(0.0, 1.0, 1001)  # false positive rates at which several runs' ROC curves are averaged


def _runs_roc_curve(runs: list[tuple[np.ndarray, np.ndarray, list[str]]], c: int
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """Class `c`'s one-vs-rest ROC curve of one run; of several (seeds, folds), their vertical average (Fawcett 2006:
    the mean true positive rate at each false positive rate), whose area is the mean of theirs; None if a run has no
    positives or negatives."""
    curves = [metrics.roc_curve(probabilities[:, c], labels == c) for probabilities, labels, _ in runs]
    if any(curve is None for curve in curves):
        return None
    if len(curves) == 1:
        return curves[0]
    return ROC_GRID, np.mean([np.interp(ROC_GRID, fpr, tpr) for fpr, tpr in curves], axis=0)


def roc_curves(summary: Summary, path: Path) -> Path:
    """One-vs-rest ROC curve of every class, one panel per row; a row of several runs draws their average curve and
    the mean of their AUCs, as the report's tables give it."""
    title = "One-vs-rest ROC curves (several seeds or folds: their mean true positive rate and mean AUC)"
    num_cols = min(3, len(summary.rows))
    num_rows = math.ceil(len(summary.rows) / num_cols)
    figure = _new_figure(title, summary.synthetic, (4.6 * num_cols + 0.5, 4.4 * num_rows + 0.8))
    for axes, row, group in zip(_panel_grid(figure, len(summary.rows), num_cols), summary.rows, summary.groups):
        axes.set_title(row["label"], fontsize=9)
        runs = test_probabilities(group)
        if runs is None:
            _not_recorded(axes, "class probabilities")
            continue
        of_runs = [metrics.one_vs_rest_auc(probabilities, labels) for probabilities, labels, _ in runs]
        for c, name in enumerate(group.runs[0].results["classes"]):
            curve = _runs_roc_curve(runs, c)
            if curve is not None:
                auc = float(np.mean([aucs[c] for aucs in of_runs]))
                axes.plot(*curve, color=_color(c), linewidth=1.2, label=f"{name} (AUC {auc:.3f})")
        axes.plot([0, 1], [0, 1], color="0.5", linestyle=":", linewidth=1)
        axes.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false positive rate (1 - specificity)",
                 ylabel="true positive rate (sensitivity)")
        axes.set_aspect("equal")
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right", fontsize=7)
        _watermark(axes, summary.synthetic)
    return _save(figure, path, title, summary.synthetic)


def reliability_diagrams(summary: Summary, path: Path) -> Path:
    """Accuracy against top-class confidence in equal-width bins, one panel per row, test tiles of all its runs
    pooled; the bars' shading shows how many tiles each bin holds."""
    title = f"Reliability diagrams ({metrics.ECE_BINS} confidence bins; test tiles of all seeds and folds pooled)"
    num_cols = min(3, len(summary.rows))
    num_rows = math.ceil(len(summary.rows) / num_cols)
    figure = _new_figure(title, summary.synthetic, (4.6 * num_cols + 0.5, 4.8 * num_rows + 0.8))
    for index, (axes, row, group) in enumerate(zip(_panel_grid(figure, len(summary.rows), num_cols), summary.rows,
                                                   summary.groups)):
        runs = test_probabilities(group)
        if runs is None or not sum(len(y) for _, y, _ in runs):
            axes.set_title(row["label"], fontsize=9)
            _not_recorded(axes, "class probabilities")
            continue
        probabilities, labels = np.concatenate([p for p, _, _ in runs]), np.concatenate([y for _, y, _ in runs])
        binned = metrics.calibration_bins(probabilities, labels, metrics.ECE_BINS)
        axes.set_title(f"{row['label']}\nECE {binned.ece():.3f} (pooled) over {len(labels):,} tiles", fontsize=9)
        filled = binned.counts > 0
        lefts, width = binned.edges[:-1][filled], 1.0 / metrics.ECE_BINS
        share = binned.counts[filled] / binned.counts.sum()
        # A bin's opacity grows with its tiles, so a sparse bin's bar does not read as firm evidence.
        opacity = 0.25 + 0.75 * share / share.max()
        colors = [(*to_rgb(_color(index)), alpha) for alpha in opacity]
        axes.bar(lefts, binned.accuracy[filled], width=width, align="edge", color=colors, edgecolor="0.3",
                 linewidth=0.5)
        axes.plot(binned.confidence[filled], binned.accuracy[filled], "o", color="black", markersize=2.5)
        axes.plot([0, 1], [0, 1], color="0.5", linestyle=":", linewidth=1)
        axes.set(xlim=(0.0, 1.0), ylim=(0.0, 1.01), xlabel="top-class confidence", ylabel="accuracy")
        axes.set_aspect("equal")
        axes.grid(alpha=0.3)
        _watermark(axes, summary.synthetic)
    legend = [Patch(facecolor="0.6", edgecolor="0.3", label="accuracy of a bin's tiles (darker: more tiles)"),
              Line2D([], [], color="black", marker="o", markersize=2.5, linestyle="",
                     label="at the bin's mean confidence"),
              Line2D([], [], color="0.5", linestyle=":", label="calibrated")]
    figure.legend(handles=legend, loc="outside lower center", ncols=3, fontsize=8)
    return _save(figure, path, title, summary.synthetic)


def training_curves(summary: Summary, path: Path) -> Path:
    """Validation accuracy and train/validation loss per epoch (mean over seeds) for every row."""
    title = "Training curves (mean over seeds)"
    figure = _new_figure(title, summary.synthetic, (12.0, 5.0))
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    missing = []
    for i, (row, group) in enumerate(zip(summary.rows, summary.groups)):
        curves = {key: mean_history(group, key) for key in HISTORY_CURVES}
        if not any(curves.values()):
            missing.append(row["name"])
            continue
        if curves["val_accuracy"]:
            epochs, values = curves["val_accuracy"]
            accuracy_axes.plot(epochs, [100.0 * v for v in values], color=_color(i), marker=".", label=row["label"])
        for key, style in (("train_loss", "-"), ("val_loss", "--")):
            if curves[key]:
                loss_axes.plot(*curves[key], color=_color(i), linestyle=style, marker=".")
    accuracy_axes.set(xlabel="epoch", ylabel="validation accuracy (%)", title="Validation accuracy")
    loss_axes.set(xlabel="epoch", ylabel="loss", title="Loss (solid: train, dashed: validation)")
    if accuracy_axes.lines:
        accuracy_axes.legend(fontsize=8)
    loss_axes.legend(
        handles=[Line2D([], [], color="0.3", linestyle="-", label="train"),
                 Line2D([], [], color="0.3", linestyle="--", label="validation")],
        fontsize=8,
    )
    for axes in (accuracy_axes, loss_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        _watermark(axes, summary.synthetic)
    if missing:
        figure.supxlabel("n/a: no history in results.json for " + ", ".join(missing), fontsize=8)
    return _save(figure, path, title, summary.synthetic)


def per_class_recall(summary: Summary, path: Path) -> Path:
    """Grouped bars: recall of every class (pooled over seeds) for every row, with its 95% CI where recorded: over
    the patients or slides holding the class's tiles where the row was split by them and they give one."""
    over_groups = any(values.get("recall_ci_groups") for table in summary.per_class if table
                      for values in table.values())
    title = "Per-class recall (pooled over seeds; 95% CI" + (
        "; over patients or slides for the rows split by them)" if over_groups else ")")
    classes: list[str] = []
    for group in summary.groups:
        classes += [c for c in group.runs[0].results["classes"] if c not in classes]
    drawn = [(i, row, table) for i, (row, table) in enumerate(zip(summary.rows, summary.per_class)) if table]
    missing = [row["name"] for row, table in zip(summary.rows, summary.per_class) if not table]
    count = max(len(drawn), 1)
    # Wider with more classes and rows, up to a width that still prints (bars narrow beyond it).
    width_in = min(24.0, max(8.0, 1.5 + len(classes) * (0.3 * count + 0.5)))
    figure = _new_figure(title, summary.synthetic, (width_in, 5.0))
    axes = figure.add_subplot()
    width = 0.8 / count
    for slot, (i, row, table) in enumerate(drawn):
        positions = [classes.index(c) + (slot - (count - 1) / 2) * width for c in table]
        recalls = np.array([values["recall"] for values in table.values()])
        # error bars from the CI, none (zero length) where the row recorded no per-tile predictions
        intervals = np.array([values.get("recall_ci_groups") or values["recall_ci"] or (values["recall"],) * 2
                              for values in table.values()])
        errors = np.stack([recalls - intervals[:, 0], intervals[:, 1] - recalls])
        axes.bar(positions, recalls, width=width, color=_color(i), label=row["label"],
                 yerr=errors, error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "0.2"})
    axes.set_xticks(np.arange(len(classes)), classes, rotation=30, ha="right")
    axes.set_ylim(0.0, 1.05)
    axes.set_ylabel("recall")
    axes.grid(axis="y", alpha=0.3)
    if axes.patches:
        axes.legend(fontsize=8, ncols=min(4, count))
    if missing:
        figure.supxlabel("n/a: no confusion matrix in results.json for " + ", ".join(missing), fontsize=8)
    _watermark(axes, summary.synthetic)
    return _save(figure, path, title, summary.synthetic)


EXTERNAL_MARKERS = "os^Dvp*hX<>"


def external_accuracy(summary: Summary, path: Path) -> Path:
    """Each external evaluation's accuracy (95% CI bars) against its run's own test accuracy; the diagonal is no drop."""
    title = "External vs own test accuracy"
    figure = _new_figure(title, summary.synthetic, (8.5, 6.0))
    axes = figure.add_subplot()
    colour = {row["name"]: _color(i) for i, row in enumerate(summary.rows)}
    label = {row["name"]: row["label"] for row in summary.rows}
    run_label = {row["name"]: row["run_label"] for row in summary.rows}
    sets = list(dict.fromkeys(line["external"] for line in summary.external))
    for line in summary.external:
        x, y = 100.0 * line["own_test_accuracy"], 100.0 * line["accuracy"]
        low, high = (100.0 * v for v in (line.get("accuracy_ci_groups") or line["accuracy_ci"]))
        axes.errorbar([x], [y], yerr=[[max(y - low, 0.0)], [max(high - y, 0.0)]], color=colour[line["name"]],
                      fmt=EXTERNAL_MARKERS[sets.index(line["external"]) % len(EXTERNAL_MARKERS)], capsize=4)
        seed = ("" if line["seed"] is None else f", seed {line['seed']}") + (
            "" if line.get("fold") is None else f", fold {line['fold']}") + (
            f", ensemble of {line['ensemble_of']}" if line.get("ensemble_of") else "")
        name = label[line["name"]] if line["seed"] is None else run_label[line["name"]]
        axes.annotate(f"{name}{seed}{', TTA' if line['tta'] else ''}", (x, y), xytext=(6, 6),
                      textcoords="offset points", fontsize=8)
    axes.plot([0, 100], [0, 100], color="0.5", linestyle=":", linewidth=1)
    axes.set(xlim=(0, 102), ylim=(0, 102), xlabel="own test accuracy (%)",
             ylabel="external test accuracy (%), bars: 95% CI" + (
                 " (over patients or slides with --group-by)" if any(
                     line.get("accuracy_ci_groups") for line in summary.external) else ""))
    axes.grid(alpha=0.3)
    axes.legend(handles=[Line2D([], [], marker=EXTERNAL_MARKERS[k % len(EXTERNAL_MARKERS)], color="0.3",
                                linestyle="none", label=Path(external).name) for k, external in enumerate(sets)]
                + [Line2D([], [], color="0.5", linestyle=":", label="no drop")], loc="lower right", fontsize=8)
    _watermark(axes, summary.synthetic)
    return _save(figure, path, title, summary.synthetic)


def write_figures(summary: Summary, out_dir: Path) -> dict[str, Path]:
    """Draw the six figures, and the external one when runs hold external evaluations, into `out_dir`.

    Returns {figure key: PNG path}.
    """
    drawers = {
        "accuracy_vs_time": accuracy_vs_time, "confusion_matrices": confusion_matrices,
        "training_curves": training_curves, "per_class_recall": per_class_recall, "roc_curves": roc_curves,
        "reliability_diagrams": reliability_diagrams, "external_accuracy": external_accuracy,
    }
    drawn = REPORT_FIGURES if summary.external else REPORT_FIGURES[:-1]
    return {name: drawers[name](summary, out_dir / f"{name}.png") for name in drawn}
