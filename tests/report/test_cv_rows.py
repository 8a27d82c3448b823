"""Cross-validated runs (`study --folds K`) in the report: one row per spec and K, folds pooled."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flaxbench.auc_intervals import macro_auc_interval
from flaxbench.class_intervals import balanced_accuracy_interval
from flaxbench.errors import FlaxbenchError
from flaxbench.report import write_report
from flaxbench.report.collect import collect_runs
from flaxbench.report.summary import summarize

from .factory import make_results, write_results


def write_folds(runs_dir, name, *, folds=3, accuracy=0.8, done=None, seed=0):
    """Fold runs of `name` as `study --folds` lays them out, each tested on tiles of its own fold."""
    for fold in range(folds) if done is None else done:
        run = runs_dir / f"{name}_{folds}fold" / f"fold_{fold}"
        results = make_results(name, seed=seed, accuracy=accuracy, tile_prefix=f"fold{fold}", num_tiles=40)
        write_results(run / "results.json", {**results, "cv_fold": fold, "cv_folds": folds})
        spec = {"name": name, "seed": seed, "data": {"cv_fold": fold, "cv_folds": folds, "split_seed": 0}}
        (run / "spec.json").write_text(json.dumps(spec))
        (run / "data.json").write_text(json.dumps({"split_digests": {"test": f"fold{fold}"}}))


def test_folds_are_one_row_beside_the_runs_on_one_split(tmp_path):
    write_folds(tmp_path, "net")
    write_results(tmp_path / "net" / "results.json", make_results("net", tile_prefix="single"))
    groups = {group.name: group for group in collect_runs(tmp_path)}
    assert set(groups) == {"net", "net_3fold"}
    assert [run.fold for run in groups["net_3fold"].runs] == [0, 1, 2]
    assert groups["net_3fold"].title == "net title (3-fold CV)" and groups["net"].title == "net title"


def test_a_row_pools_its_folds_and_pairs_every_tile_with_the_best_row(tmp_path):
    write_folds(tmp_path, "good", accuracy=0.9)
    write_folds(tmp_path, "fair", accuracy=0.6)
    rows = {row["name"]: row for row in summarize(collect_runs(tmp_path)).rows}
    fair = rows["fair_3fold"]
    assert (fair["seeds"], fair["cv_folds"], fair["cv_folds_run"]) == (1, 3, 3)
    assert fair["mcnemar_shared_tiles"] == 120 and fair["mcnemar_p_vs_best"] < 0.05  # all three folds' tiles
    assert fair["test_accuracy_std_pct"] is not None  # over the folds
    assert fair["label"] == "fair title (3-fold CV)"


def test_a_row_missing_folds_says_so(tmp_path):
    write_folds(tmp_path, "net", folds=5, done=(0, 1))
    row = summarize(collect_runs(tmp_path)).rows[0]
    assert (row["cv_folds"], row["cv_folds_run"]) == (5, 2)
    assert row["label"] == row["title"] == "net title (5-fold CV, 2 folds run)"  # the tables' name too
    write_report(tmp_path)
    assert "| net title (5-fold CV, 2 folds run) (`net_5fold`) |" in (tmp_path / "report.md").read_text()


def test_the_roc_figure_draws_a_cross_validated_row_with_the_auc_its_tables_give(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from flaxbench.report.figures import roc_curves

    write_folds(tmp_path, "net", accuracy=0.7)
    summary = summarize(collect_runs(tmp_path))
    drawn = {}
    plot = Axes.plot

    def recorded_plot(self, *args, label=None, **kwargs):
        drawn[label] = args
        return plot(self, *args, label=label, **kwargs)

    monkeypatch.setattr(Axes, "plot", recorded_plot)
    roc_curves(summary, tmp_path / "roc.png")
    for name, values in summary.per_class[0].items():
        (fpr, tpr), = [args for label, args in drawn.items() if label == f"{name} (AUC {values['auc']:.3f})"]
        assert np.trapezoid(tpr, fpr) == pytest.approx(values["auc"], abs=2e-3)  # the folds' mean, not pooled tiles


def test_report_explains_cross_validated_rows(tmp_path):
    write_folds(tmp_path, "net")
    paths = write_report(tmp_path)
    text = paths["md"].read_text()
    assert "**K-fold CV** rows" in text and "`net_3fold`" in text
    assert json.loads(paths["json"].read_text())["rows"][0]["cv_folds"] == 3


def test_two_results_for_one_fold_and_seed_are_an_error(tmp_path):
    write_folds(tmp_path, "net")
    copy = tmp_path / "copy" / "results.json"
    write_results(copy, json.loads((tmp_path / "net_3fold" / "fold_1" / "results.json").read_text()))
    with pytest.raises(FlaxbenchError, match="two results for 'net_3fold' with seed 0 and fold 1"):
        collect_runs(tmp_path)


@pytest.mark.parametrize("fold, folds", [(3, 3), (None, 3), (0, None), ("1", 3)])
def test_malformed_folds_name_the_file_and_keys(tmp_path, fold, folds):
    path = write_results(tmp_path / "r" / "results.json", {**make_results("net"), "cv_fold": fold, "cv_folds": folds})
    with pytest.raises(FlaxbenchError, match=f"{path}.*'cv_fold' and 'cv_folds'"):
        collect_runs(tmp_path)


def test_external_results_of_fold_runs_name_their_fold():
    from flaxbench.report.external import external_section

    line = {"name": "net_3fold", "seed": 0, "fold": 2, "external": "/data/other", "center_crop": None, "tiles": 9,
            "checkpoint": "best", "tta": False, "accuracy": 0.5, "accuracy_ci": (0.2, 0.8), "balanced_accuracy": 0.5,
            "balanced_accuracy_ci": (0.2, 0.8), "macro_f1": 0.4, "macro_auc": None, "loss": 1.0,
            "best_on_these_tiles": False, "mcnemar_p_vs_best": None, "own_test_accuracy": 0.6}
    assert "| `net_3fold` | 0, fold 2 | `/data/other` |" in "\n".join(external_section([line]))
    assert "| `net` | 1 | `/data/other` |" in "\n".join(external_section([{**line, "name": "net", "seed": 1,
                                                                          "fold": None}]))
    compared = {**line, "mcnemar_p_vs_best": 0.0125, "mcnemar_p_holm": 0.025}  # one of two lines on these tiles
    assert "| 0.0125 (Holm 0.025) | 60.0 |" in "\n".join(external_section([compared]))


def _ensemble_record(members: list[dict]) -> dict:
    """An external evaluation of a cross-validated row's folder, as `evaluate --external` writes it."""
    return {"external": "/data/other", "checkpoint": "best", "tta": False, "tiles": 9, "accuracy": 0.7,
            "balanced_accuracy": 0.7, "macro_f1": 0.6, "macro_auc": 0.8, "loss": 0.9, "accuracy_ci": [0.4, 0.9],
            "balanced_accuracy_ci": [0.4, 0.9], "members": members, "member_accuracy_mean": 0.6,
            "member_accuracy_std": 0.05}


def test_a_rows_ensemble_on_external_tiles_is_a_line_with_its_runs_spread(tmp_path):
    write_folds(tmp_path, "net", accuracy=0.8)
    members = [{"workdir": str(tmp_path / "net_3fold" / f"fold_{k}"), "accuracy": 0.6} for k in range(3)]
    (tmp_path / "net_3fold" / "eval_external_other.json").write_text(json.dumps(_ensemble_record(members)))
    paths = write_report(tmp_path, tmp_path / "out")
    report = json.loads(paths["json"].read_text())
    [line], [row] = report["external"], report["rows"]
    assert (line["name"], line["ensemble_of"], line["seed"], line["fold"]) == ("net_3fold", 3, None, None)
    assert 100 * line["own_test_accuracy"] == pytest.approx(row["test_accuracy_pct"])  # the mean over the folds
    # The accuracy's CI is the Wilson interval of 70% over 9 tiles, whatever interval the file holds
    assert "| `net_3fold` | ensemble of 3 runs | `/data/other` | 9 | best | 70.0 (38.2–89.8); runs 60.0 ± 5.0 |" in (
        paths["md"].read_text())
    # and in report.tex, the last table
    tex = paths["tex"].read_text()
    assert r"\caption{External test sets (synthetic data)}" in tex
    assert tex.index("External test sets") > tex.index("Per class")
    assert (r"\texttt{net\_3fold} & ensemble of 3 runs & \texttt{/data/other} & 9 & best & "
            r"\begin{tabular}[t]{@{}r@{}}70.0 \\ (38.2--89.8); \\ runs 60.0 $\pm$ 5.0\end{tabular} & ") in tex


def test_an_externals_balanced_accuracy_and_macro_auc_cis_are_computed_again_from_the_files_predictions(tmp_path):
    write_folds(tmp_path, "net")
    members = [{"workdir": str(tmp_path / "net_3fold" / f"fold_{k}"), "accuracy": 0.6} for k in range(3)]
    labels, predicted = [0, 0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1, 1]
    probabilities = [[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.4, 0.6], [0.45, 0.55], [0.2, 0.8], [0.3, 0.7],
                     [0.1, 0.9], [0.35, 0.65]]
    record = {**_ensemble_record(members), "macro_auc_ci": [0.5, 0.9],
              "predictions": {"ids": [f"t{k}" for k in range(9)], "labels": labels, "predictions": predicted,
                              "probabilities": probabilities}}
    (tmp_path / "net_3fold" / "eval_external_other.json").write_text(json.dumps(record))
    [line] = json.loads(write_report(tmp_path, tmp_path / "out")["json"].read_text())["external"]
    # the file's intervals (an older version's bootstraps) give way to those the report computes everywhere
    expected = balanced_accuracy_interval(np.equal(labels, predicted), np.ones(9), np.array(labels))
    assert line["balanced_accuracy_ci"] == pytest.approx(expected)
    assert line["macro_auc_ci"] == pytest.approx(macro_auc_interval([np.array(probabilities)], [np.array(labels)]))


@pytest.mark.parametrize("members, problem", [
    ([{"workdir": "fold_0", "accuracy": 0.6}], "'members' is not a list of two runs or more"),
    ([{"workdir": "fold_0"}, {"workdir": "fold_1", "accuracy": 0.6}], "'members' is not a list of two runs or more"),
])
def test_an_ensembles_bad_members_are_an_error_naming_the_file(tmp_path, members, problem):
    write_folds(tmp_path, "net")
    path = tmp_path / "net_3fold" / "eval_external_other.json"
    path.write_text(json.dumps(_ensemble_record(members)))
    with pytest.raises(FlaxbenchError, match=f"{path}: not an external evaluation \\({problem}"):
        write_report(tmp_path, tmp_path / "out")


def test_a_rows_copied_test_tiles_add_up_over_its_folds(tmp_path):
    write_folds(tmp_path, "net", folds=3)
    for fold, copies in enumerate((2, 0, 1)):
        path = tmp_path / "net_3fold" / f"fold_{fold}" / "results.json"
        results = json.loads(path.read_text())
        results["duplicate_tiles"] = {"across_splits": {"val_in_train": 0, "test_in_train": copies, "test_in_val": 0},
                                      "within_splits": {}, "label_conflicts": 0, "examples": []}
        path.write_text(json.dumps(results))
    [row] = summarize(collect_runs(tmp_path)).rows
    assert row["test_tile_copies"] == 3 and row["data"].endswith("; 3 test tiles copying train/val tiles")


def test_a_rows_test_tiles_from_slides_its_training_held_add_up_over_its_folds(tmp_path):
    write_folds(tmp_path, "net", folds=2)
    for fold, shared in enumerate((30, 12)):
        path = tmp_path / "net_2fold" / f"fold_{fold}" / "results.json"
        results = json.loads(path.read_text())
        results["shared_groups"] = {"what": "Kather 2016 slides", "pattern": r"CRC-Prim-HE-\d+", "test_groups": 9,
                                    "shared_groups": 7, "test_tiles": 40, "shared_tiles": shared}
        path.write_text(json.dumps(results))
    [row] = summarize(collect_runs(tmp_path)).rows
    # the folds' slides may repeat, so only their tiles add up
    assert row["test_tiles_in_training_groups"] == 42 and row["data"].endswith(
        "; 42 of 80 test tiles come from Kather 2016 slides that train/val also hold (group_by "
        r"`CRC-Prim-HE-\d+` keeps them apart)")
