"""The notes under report.md's tables: how each column is defined, and what the rows have in common or not."""

from __future__ import annotations

from flaxbench.metrics import ECE_BINS
from flaxbench.report.summary import Summary, any_split_by_group


def _failed_runs(summary: Summary) -> str:
    """The errors of the unfinished runs a study saw fail, each with its runs, for the note on them."""
    if not summary.failed:
        return ""
    runs_of: dict[str, list[str]] = {}
    for path, error in summary.failed:
        runs_of.setdefault(error, []).append(f"`{path}`")
    return (f" Of these, {len(summary.failed)} failed in the study (fix the cause and run it again): "
            + "; ".join(f"{', '.join(paths)}: {error.rstrip('.')}" for error, paths in runs_of.items()) + ".")

def table_notes(summary: Summary) -> list[str]:
    """How each column is defined; printed under the Markdown table."""
    best = next(row for row in summary.rows if row["name"] == summary.best)
    return [
        "**Layers** (depth) = weight layers: conv + dense, as counted in results.json's `layers`; "
        "pooling, normalisation, activation and dropout layers are not counted.",
        "**Time cost** = training time `train_time_s`; compile time is listed apart. "
        "Accuracy per second = test accuracy in % / time cost; loss per second = test avg loss / time cost.",
        "Rows with several seeds show the mean over seeds in every numeric column (accuracy and loss per second: "
        "the mean of the seeds' own ratios); mean ± std uses the sample standard deviation (n − 1).",
        "**95% CI** of test accuracy: the Wilson score interval of a proportion of test tiles (unlike a "
        "bootstrap, it does not shrink to nothing when every tile is right); with several seeds, of their pooled "
        "accuracy, the tiles counted once (seeds sharing a test set are not extra tiles). The CI of balanced "
        "accuracy combines its classes' recalls' Wilson intervals by MOVER (Zou and Donner 2008; the classes' "
        "tiles are independent: each bound is the mean recall less or plus the root sum of squares of the "
        "recalls' distances to their bounds, over the number of classes), so it does not shrink to nothing "
        "either. The CI of macro AUC combines its classes' AUC intervals (the per-class table's score intervals, "
        "each class's AUC the mean over seeds, over the distinct test tiles) by MOVER with the correlations of "
        "their estimates (DeLong's covariance: the classes' AUCs share tiles).",
        f"**McNemar p**: exact two-sided binomial test on the tiles where exactly one of the two rows is right, "
        f"against the best row {best['title']} (`{best['name']}`, highest mean test accuracy); tiles are paired "
        "by id, only for rows tested on the best row's classes and exactly its test tiles; for rows with "
        "several seeds, each tile's outcome is the share of the row's seeds right on it and the test is its "
        "generalisation, the exact sign-flip test of the tiles' differences (each as likely negated under the "
        "null; with one seed each, exactly McNemar's). **Holm-adjusted**: the same p-values adjusted together "
        "(Holm–Bonferroni over every row compared with the best): declaring the rows with an adjusted p below "
        "0.05 different from the best keeps the chance of declaring any false difference at 5% or less. "
        "**Accuracy vs best, paired**: the row's accuracy minus the best row's on the same tiles, in "
        "percentage points (with several seeds, of their mean accuracies over the seeds), with Newcombe's "
        "(1998, method 10) 95% CI: the two accuracies' Wilson intervals combined by MOVER with the correlation of "
        "the rows' outcomes on each tile (its numerator continuity-corrected, as the method has it; with several "
        "seeds, from the 2x2 table of right and wrong averaged over every pairing of the two rows' seeds).",
        f"**ECE**: expected calibration error, the tile-weighted gap between accuracy and mean top-class "
        f"confidence over {ECE_BINS} equal-width confidence bins (0: calibrated; reliability_diagrams.png draws "
        "the bins). **Temperature-scaled**: the same after dividing each run's logits by one temperature fitted "
        "on its validation tiles to minimise their loss (Guo et al. 2017); predictions, accuracy and the other "
        "columns are unchanged.",
        "n/a = not recorded in results.json.",
    ] + ([
        "**95% CI over patients or slides**, for rows split by `spec.data.group_by` (whole groups per split), or "
        "whose tile ids name their slides or patients by a known convention (Kather 2016 slides, TCGA barcodes; "
        "such a row split tile by tile shares them with its training, as the Data column says), the cell saying "
        "how many test groups: tiles of one patient or slide look alike and are often right or wrong "
        "together, so the tile-level CI, which counts them as independent, is too narrow where the test tiles come "
        "from few groups; this one is the interval to quote then. It is the Wilson interval of an effective number "
        "of tiles: the test tiles divided by the design effect (the variance of the accuracy over the groups, a "
        "ratio estimator, against the binomial variance of independent tiles; at least 1: report.json's "
        "`test_groups_design_effect`), times (z / t)² with t of groups − 1 degrees of freedom (Korn and Graubard), "
        "so few groups widen it; it is never narrower than the tile-level CI. Seeds and folds are pooled as for the "
        "tile-level CI. **95% CI of balanced accuracy and of macro AUC over patients or slides**: no proportions, "
        "so their tile-level CIs widened about the value by the square root of their design effect (the "
        "variance of the statistic from each tile's influence on it summed by group, against that of independent "
        "tiles; for AUC Obuchowski's clustered DeLong variance; at least 1) and by t / z as above; a class whose "
        "tiles all come from one group adds nothing to the spread over groups, so with classes from one slide each "
        "the per-class tables' '1 group' cells say what cannot be seen. **Accuracy vs best over patients or "
        "slides**, for rows grouped as the best row is "
        "and tested on its tiles: the same paired difference as the tile-level one (seeds as there), with the "
        "groups as the units: its variance over the groups (a ratio estimator of the per-tile differences summed "
        "by group; at least that of independent tiles) gives the two-sided p-value from a t distribution of "
        "groups − 1 degrees of freedom, and that p Holm-adjusted over the rows in brackets; the 95% CI is the "
        "tile-level one widened about the difference by the square root of the design effect and by t / z. Where "
        "rows were split by group these are the comparison to quote; the McNemar tests and the other CIs count "
        "tiles as independent.",
    ] if any_split_by_group(summary.rows) else []) + ([
        "**K-fold CV** rows (`study --folds K`): one run per fold, each tested on its fold, validated on the next "
        "and trained on the others; numeric columns and mean ± std are over the folds (and seeds), and the CIs, "
        "McNemar test and per-class values pool the folds' test predictions, so each tile counts once (per seed); "
        "AUCs are the mean of the folds' own.",
    ] if any(row["cv_folds"] for row in summary.rows) else []) + ([
        "**Copied tiles**: the Data column counts test tiles whose pixels equal a training or validation tile's "
        "(the same tile filed twice, perhaps under another name or format: it is not held out, and its accuracy "
        "flatters the row), test tiles that nearly copy one (the same tile rotated, flipped, re-saved as JPEG, "
        "resized or recoloured, found by a perceptual hash; data.json says how close), with the row's "
        "test accuracy on the other tiles, and sets of identical tiles filed under two labels (near-copies under "
        "another label than the tile they copy); each run's "
        "data.json lists examples. Remove the copies, or split by patient or slide (`spec.data.group_by`).",
    ] if any(row["test_tile_copies"] or row["test_tile_near_copies"] or row["label_conflicts"]
             or row["near_copy_label_conflicts"] for row in summary.rows) else []) + ([
        "**Not checked for copied tiles**: "
        + ", ".join(f"`{row['name']}`" for row in summary.rows if row["test_tile_copies"] is None)
        + " (runs trained before flaxbench looked for them, or with `spec.data.duplicates='off'`): whether a test "
        "tile of theirs copies a training tile is not known.",
    ] if any(row["test_tile_copies"] is None for row in summary.rows) else []) + ([
        "**Not checked for near-copies**: "
        + ", ".join(f"`{row['name']}`" for row in summary.rows
                    if row["test_tile_copies"] is not None and row["test_tile_near_copies"] is None)
        + " (runs trained before flaxbench looked for them): their test tiles were compared with the training "
        "tiles pixel by pixel only, so a rotated, flipped or re-saved copy would not have been found.",
    ] if any(row["test_tile_copies"] is not None and row["test_tile_near_copies"] is None
             for row in summary.rows) else []) + ([
        f"**Not one test set**: these rows were tested on {summary.test_sets} different test sets (other "
        "classes or other tiles, e.g. another split): accuracies from different test sets are not directly "
        "comparable, and the ranking mixes them.",
    ] if summary.test_sets > 1 else []) + ([
        f"**Not in the tables**: {len(summary.unfinished)} run{'s' if len(summary.unfinished) > 1 else ''} "
        "without results.json (still training, interrupted or failed; resume with the same command): "
        + ", ".join(f"`{path}`" for path in summary.unfinished[:10]) + (", ..." if len(summary.unfinished) > 10 else "")
        + ". A row of several seeds or folds is then the mean of those that finished." + _failed_runs(summary),
    ] if summary.unfinished else []) + ([
        f"**Not one device**: these rows were timed on different devices "
        f"({'; '.join(summary.devices)}): time cost, accuracy and loss per second, images/s and compile time "
        "compare the devices as much as the models.",
    ] if len(summary.devices) > 1 else [])
