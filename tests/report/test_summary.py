"""Report rows: seed means, confidence intervals, McNemar against the best row, n/a for missing data."""

from __future__ import annotations

import json
import re
import statistics

import numpy as np
import pytest

from flaxbench import metrics
from flaxbench.class_intervals import wilson_interval
from flaxbench.report.collect import collect_runs
from flaxbench.report.summary import summarize
from tests.report.factory import correct_by_id, make_results, write_results


@pytest.fixture()
def study(tmp_path):
    """Three seeds of 'multi', one 'strong' run, one run on a disjoint test split: {name: [results]}."""
    runs = {
        "multi": [make_results("multi", seed=s, accuracy=0.7) for s in (0, 1, 2)],
        "strong": [make_results("strong", accuracy=0.95)],
        "elsewhere": [make_results("elsewhere", accuracy=0.6, tile_prefix="other")],
    }
    for name, results in runs.items():
        for r in results:
            write_results(tmp_path / name / f"seed_{r['seed']}" / "results.json", r)
    return tmp_path, runs


def _rows(runs_dir):
    return {row["name"]: row for row in summarize(collect_runs(runs_dir)).rows}


def test_rows_are_sorted_best_first(study):
    runs_dir, _ = study
    summary = summarize(collect_runs(runs_dir))
    accuracies = [row["test_accuracy_pct"] for row in summary.rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert summary.best == summary.rows[0]["name"] == "strong"


def test_several_seeds_give_mean_and_sample_std(study):
    runs_dir, runs = study
    row = _rows(runs_dir)["multi"]
    accuracies = [100 * r["test_accuracy"] for r in runs["multi"]]
    assert row["seeds"] == 3
    assert row["seed_values"] == [0, 1, 2]
    assert row["test_accuracy_pct"] == pytest.approx(statistics.mean(accuracies))
    assert row["test_accuracy_std_pct"] == pytest.approx(statistics.stdev(accuracies))
    assert row["train_time_s"] == pytest.approx(statistics.mean(r["train_time_s"] for r in runs["multi"]))
    assert row["params"] == 123456 and isinstance(row["params"], int)


def test_single_seed_has_no_std(study):
    runs_dir, _ = study
    assert _rows(runs_dir)["strong"]["test_accuracy_std_pct"] is None


def test_macro_auc_ci_holds_the_rows_macro_auc_and_needs_probabilities(study, tmp_path):
    runs_dir, _ = study
    for name, row in _rows(runs_dir).items():  # one seed, or the mean of three
        assert row["macro_auc_ci95_low"] < row["macro_auc"] < row["macro_auc_ci95_high"], name
    older = make_results("older")
    del older["test_predictions"]["probabilities"]  # written before flaxbench kept them
    write_results(tmp_path / "older" / "results.json", older)
    row = _rows(tmp_path)["older"]
    assert row["macro_auc"] is not None and row["macro_auc_ci95_low"] is None


def test_probabilities_that_do_not_fit_the_tiles_are_an_error_naming_the_file(tmp_path):
    from flaxbench.errors import FlaxbenchError

    broken = make_results("broken")
    broken["test_predictions"]["probabilities"][3] = [0.5, 0.5]
    path = write_results(tmp_path / "broken" / "results.json", broken)
    with pytest.raises(FlaxbenchError, match=f"{path}: key 'test_predictions.probabilities' must hold 6 numbers"):
        collect_runs(tmp_path)


def test_accuracy_ci_is_wilsons_over_the_rows_tiles_with_seeds_pooled(study, tmp_path):
    runs_dir, runs = study
    rows = _rows(runs_dir)
    for name, results in runs.items():
        row, tiles = rows[name], len(results[0]["test_predictions"]["ids"])
        pooled = statistics.fmean(r["test_accuracy"] for r in results)  # the seeds share their tiles
        low, high = wilson_interval(pooled, tiles)
        assert (row["test_accuracy_ci95_low_pct"], row["test_accuracy_ci95_high_pct"]) == pytest.approx(
            (100 * low, 100 * high))
        assert row["test_accuracy_ci95_low_pct"] <= row["test_accuracy_pct"] <= row["test_accuracy_ci95_high_pct"]
    # Every tile right: the interval still says how few tiles there were (a bootstrap's would be [100, 100])
    write_results(tmp_path / "perfect" / "results.json", make_results("perfect", accuracy=1.0, num_tiles=60))
    perfect = _rows(tmp_path / "perfect")["perfect"]
    assert perfect["test_accuracy_pct"] == 100.0 and perfect["test_accuracy_ci95_high_pct"] == 100.0
    assert perfect["test_accuracy_ci95_low_pct"] == pytest.approx(100 * wilson_interval(1.0, 60)[0])
    assert perfect["test_accuracy_ci95_low_pct"] < 95


def test_a_row_of_several_seeds_pairs_each_tiles_share_of_its_seeds_with_the_best_row(study):
    runs_dir, runs = study
    rows = _rows(runs_dir)
    seeds, best = [correct_by_id(r) for r in runs["multi"]], correct_by_id(runs["strong"][0])
    shared = sorted(best)
    shares = np.array([np.mean([seed[t] for seed in seeds]) for t in shared])
    expected = metrics.paired_p_value(shares, np.array([best[t] for t in shared], float), 3, 1)
    assert rows["multi"]["mcnemar_p_vs_best"] == pytest.approx(expected)
    assert rows["multi"]["mcnemar_shared_tiles"] == len(shared) == 60
    assert rows["multi"]["accuracy_vs_best_pct"] == pytest.approx(
        rows["multi"]["test_accuracy_pct"] - rows["strong"]["test_accuracy_pct"])  # the mean over the seeds
    assert rows["strong"]["mcnemar_p_vs_best"] is None
    assert rows["strong"]["mcnemar_note"] == "best row"


def test_a_row_below_the_best_is_behind_it_even_where_its_first_seed_is_ahead(tmp_path):
    write_results(tmp_path / "best" / "results.json", make_results("best", accuracy=0.8))
    for seed, accuracy in ((0, 0.97), (1, 0.45)):  # its first seed beats the best row, its mean does not
        write_results(tmp_path / "mixed" / f"seed_{seed}" / "results.json",
                      make_results("mixed", seed=seed, accuracy=accuracy))
    rows = _rows(tmp_path)
    first_seed = 100 * json.loads((tmp_path / "mixed" / "seed_0" / "results.json").read_text())["test_accuracy"]
    assert first_seed > rows["best"]["test_accuracy_pct"] > rows["mixed"]["test_accuracy_pct"]
    difference = rows["mixed"]["accuracy_vs_best_pct"]
    assert difference < 0 and difference == pytest.approx(rows["mixed"]["test_accuracy_pct"]
                                                          - rows["best"]["test_accuracy_pct"])
    low, high = rows["mixed"]["accuracy_vs_best_ci95_low_pct"], rows["mixed"]["accuracy_vs_best_ci95_high_pct"]
    assert low < difference < high


def test_rows_on_the_best_rows_tiles_get_holm_adjusted_p_values_and_a_paired_difference(tmp_path):
    for name, accuracy in (("best", 0.95), ("close", 0.9), ("far", 0.6), ("farther", 0.5)):
        write_results(tmp_path / name / "results.json", make_results(name, accuracy=accuracy))
    rows = _rows(tmp_path)
    compared = ["close", "far", "farther"]
    raw = [rows[name]["mcnemar_p_vs_best"] for name in compared]
    assert [rows[name]["mcnemar_p_holm"] for name in compared] == pytest.approx(metrics.holm_adjusted(raw))
    assert rows["best"]["mcnemar_p_holm"] is None and rows["best"]["accuracy_vs_best_pct"] is None
    smallest = min(range(3), key=lambda k: raw[k])
    assert rows[compared[smallest]]["mcnemar_p_holm"] == pytest.approx(min(1.0, 3 * raw[smallest]))
    for name in compared:
        row, best = rows[name], rows["best"]["test_accuracy_pct"]
        assert row["accuracy_vs_best_pct"] == pytest.approx(row["test_accuracy_pct"] - best)
        low, high = row["accuracy_vs_best_ci95_low_pct"], row["accuracy_vs_best_ci95_high_pct"]
        assert low <= row["accuracy_vs_best_pct"] <= high
    assert rows["farther"]["accuracy_vs_best_ci95_high_pct"] < 0  # 45 points behind on 60 tiles: clearly worse


def test_mcnemar_pairs_only_rows_on_the_same_test_set(tmp_path):
    best = make_results("best", accuracy=0.95)
    partial = make_results("partial", accuracy=0.5)
    predictions = partial["test_predictions"]
    for key in ("ids", "labels", "predictions", "probabilities"):
        predictions[key] = predictions[key][:25]  # evaluated on the first 25 tiles only
    other_classes = make_results("fewer_classes", accuracy=0.5)
    other_classes["classes"] = [f"class{k}" for k in range(len(other_classes["classes"]))]
    for name, results in (("best", best), ("partial", partial), ("fewer_classes", other_classes)):
        write_results(tmp_path / name / "results.json", results)
    rows = _rows(tmp_path)
    assert rows["partial"]["mcnemar_p_vs_best"] is None
    assert "tested on other tiles than the best row 'best' (25 of 60 shared" in rows["partial"]["mcnemar_note"]
    assert rows["fewer_classes"]["mcnemar_p_vs_best"] is None
    assert "trained on other classes" in rows["fewer_classes"]["mcnemar_note"]
    assert summarize(collect_runs(tmp_path)).test_sets == 3


def test_mcnemar_without_shared_tiles_is_na_with_reason(study):
    runs_dir, _ = study
    row = _rows(runs_dir)["elsewhere"]
    assert row["mcnemar_p_vs_best"] is None
    assert row["mcnemar_shared_tiles"] == 0
    assert "tested on other tiles" in row["mcnemar_note"]


def test_rows_sharing_a_title_are_labelled_with_their_names(tmp_path):
    for name in ("conv_a", "conv_b"):
        write_results(tmp_path / name / "results.json", make_results(name, title="ConvModel"))
    labels = {row["label"] for row in summarize(collect_runs(tmp_path)).rows}
    assert labels == {"ConvModel (conv_a)", "ConvModel (conv_b)"}


def test_missing_optional_fields_become_none(tmp_path):
    sparse = make_results("sparse", accuracy=0.5)
    for key in ("test_predictions", "history", "layers", "compile_time_s"):
        del sparse[key]
    sparse["flops_per_image"] = None
    write_results(tmp_path / "sparse" / "results.json", sparse)
    write_results(tmp_path / "full" / "results.json", make_results("full", accuracy=0.9))
    row = _rows(tmp_path)["sparse"]
    for key in ("flops_per_image", "layers", "compile_time_s", "test_accuracy_ci95_low_pct", "mcnemar_p_vs_best"):
        assert row[key] is None, key
    assert "no per-tile test predictions" in row["mcnemar_note"]


def test_macro_f1_falls_back_to_confusion_matrix(tmp_path):
    results = make_results("no_f1")
    expected = results.pop("macro_f1")
    write_results(tmp_path / "results.json", results)
    assert _rows(tmp_path)["no_f1"]["macro_f1"] == pytest.approx(expected)


def test_data_column_marks_synthetic_rows(tmp_path):
    write_results(tmp_path / "s" / "results.json", make_results("s", synthetic=True))
    write_results(tmp_path / "r" / "results.json", make_results("r", synthetic=False))
    summary = summarize(collect_runs(tmp_path))
    rows = {row["name"]: row for row in summary.rows}
    assert (rows["s"]["data"], rows["s"]["synthetic"]) == ("synthetic", True)
    assert (rows["r"]["data"], rows["r"]["synthetic"]) == ("kather2016", False)
    assert summary.synthetic


def test_initial_weights_column_says_where_each_row_started(tmp_path):
    inits = {"a": ("scratch", "scratch"), "b": ("torchvision:/weights/resnet18.pth", "torchvision"), "c": (None, None),
             "d": ("checkpoint:runs/resnet18_nct", "checkpoint:resnet18_nct"),
             "e": ("checkpoint:runs/resnet18_nct/checkpoints/last/", "checkpoint:resnet18_nct/last"),
             "f": ("checkpoint:w/resnet18", "checkpoint:resnet18")}
    for name, (init, _) in inits.items():
        write_results(tmp_path / name / "results.json", {**make_results(name, title="ResNet18 (ImageNet)"), "init": init})
    rows = {row["name"]: row for row in summarize(collect_runs(tmp_path)).rows}
    assert {name: rows[name]["init"] for name in inits} == {name: label for name, (_, label) in inits.items()}


def _copies(test_in_train: int, test_in_val: int, conflicts: int, near: list[str] | None = None) -> dict:
    """A data pipeline `duplicate_tiles` record; `near` the ids of its near-copies in test (None: not looked for)."""
    record = {"across_splits": {"val_in_train": 5, "test_in_train": test_in_train, "test_in_val": test_in_val},
              "within_splits": {"train": 3, "val": 0, "test": 0}, "label_conflicts": conflicts,
              "examples": ["'test/a.png' = 'train/a.tif'"]}
    if near is not None:
        record["near_copies"] = {"across_splits": {"val_in_train": 0, "test_in_train": len(near), "test_in_val": 0},
                                 "examples": [], "copied_ids": {"val": [], "test": near}, "max_bits": 16,
                                 "hash_bits": 143}
    return record


def _write_two_seeds(runs_dir, key: str, records: dict) -> None:
    """Two seeds of a row per name, each with results.json's `key` = the name's record (None: no such key); seeds on
    one split count its tiles once."""
    for name, record in records.items():
        for seed in (0, 1):
            results = make_results(name, seed=seed)
            if record is not None:
                results[key] = record
            write_results(runs_dir / name / f"seed_{seed}" / "results.json", results)


def test_copied_test_tiles_and_label_conflicts_are_counted_where_recorded(tmp_path):
    from flaxbench.report import write_report
    _write_two_seeds(tmp_path, "duplicate_tiles", {
        "copied": _copies(2, 1, 1, near=[]), "clean": _copies(0, 0, 0, near=[]), "unchecked": None,
        "pixels_only": _copies(0, 0, 0)})
    rows = _rows(tmp_path)
    assert (rows["copied"]["test_tile_copies"], rows["copied"]["label_conflicts"]) == (3, 1)
    assert rows["copied"]["data"].endswith(
        "; 3 test tiles copying train/val tiles; 1 identical tile set under two labels")
    assert (rows["clean"]["test_tile_copies"], rows["clean"]["label_conflicts"]) == (0, 0)
    assert (rows["unchecked"]["test_tile_copies"], rows["unchecked"]["label_conflicts"]) == (None, None)
    assert "copying" not in rows["clean"]["data"] + rows["unchecked"]["data"]
    markdown = write_report(tmp_path)["md"].read_text()
    assert "**Copied tiles**: the Data column counts test tiles" in markdown
    # The study's table marks the copied row's test accuracy, and only its, with a footnote
    accuracy = {name: f"{row['test_accuracy_pct']:.2f}" for name, row in rows.items()}
    marked = re.search(rf"`copied`\) \| {accuracy['copied']} (\[\d\]) \|", markdown).group(1)
    assert f"\n{marked} some of the row's test tiles copy, or nearly copy, its training or validation" in markdown
    assert f"| {accuracy['clean']} |" in markdown and markdown.count(f" {marked}") == 1
    assert "**Not checked for copied tiles**: `unchecked` (runs trained before" in markdown
    assert "**Not checked for near-copies**: `pixels_only` (runs trained before" in markdown
    for name in ("copied", "unchecked", "pixels_only"):
        (tmp_path / name).rename(tmp_path.parent / f"{name}_elsewhere")
    markdown = write_report(tmp_path)["md"].read_text()
    assert not any(note in markdown for note in ("**Copied tiles**", "**Not checked for copied tiles**",
                                                 "**Not checked for near-copies**"))


def test_test_tiles_from_slides_the_training_held_are_counted_and_footnoted(tmp_path):
    from flaxbench.report import write_report
    shared = {"what": "Kather 2016 slides", "pattern": r"CRC-Prim-HE-\d+", "test_groups": 10, "shared_groups": 9,
              "test_tiles": 60, "shared_tiles": 55}
    _write_two_seeds(tmp_path, "shared_groups", {
        "leaky": shared, "apart": {**shared, "shared_groups": 0, "shared_tiles": 0}, "unnamed": None})
    rows = _rows(tmp_path)
    assert [rows[name]["test_tiles_in_training_groups"] for name in ("leaky", "apart", "unnamed")] == [55, 0, None]
    assert rows["leaky"]["data"].endswith(
        "; 55 of 60 test tiles come from 9 of the 10 test Kather 2016 slides that train/val also "
        "hold (group_by `CRC-Prim-HE-\\d+` keeps them apart)")
    assert "train/val also hold" not in rows["apart"]["data"] + rows["unnamed"]["data"]
    markdown = write_report(tmp_path)["md"].read_text()
    marked = re.search(rf"`leaky`\) \| {rows['leaky']['test_accuracy_pct']:.2f} (\[\d\]) \|", markdown).group(1)
    assert f"\n{marked} some of the row's test tiles come from patients or slides its training" in markdown
    assert markdown.count(f" {marked}") == 1


def test_per_class_values_without_per_tile_predictions_have_no_cis(tmp_path):
    from flaxbench.report.pooled import per_class

    results = make_results("net")
    del results["test_predictions"]
    write_results(tmp_path / "net" / "results.json", results)
    [group] = collect_runs(tmp_path)
    table = per_class(group)
    assert all(values["f1"] is not None and values["f1_ci"] is None and values["auc_ci"] is None
               for values in table.values())
    write_results(tmp_path / "net" / "results.json", make_results("net"))
    [group] = collect_runs(tmp_path)
    assert all(values["f1_ci"] is not None and values["auc_ci"] is not None for values in per_class(group).values())


def test_the_test_accuracy_without_copied_tiles_leaves_each_runs_copies_out(tmp_path):
    expected = []
    for seed in (0, 1):
        results = make_results("copied", seed=seed, accuracy=0.7)
        predictions = results["test_predictions"]
        copied = predictions["ids"][:10]
        results["duplicate_tiles"] = {**_copies(len(copied), 0, 0), "copied_ids": {"val": [], "test": copied}}
        write_results(tmp_path / "copied" / f"seed_{seed}" / "results.json", results)
        kept = [label == predicted for tile, label, predicted
                in zip(predictions["ids"], predictions["labels"], predictions["predictions"]) if tile not in copied]
        expected.append(100 * statistics.fmean(kept))
    row = _rows(tmp_path)["copied"]
    assert row["test_accuracy_without_copies_pct"] == pytest.approx(statistics.fmean(expected))
    assert row["data"].endswith(f"; 10 test tiles copying train/val tiles (test accuracy without them "
                                f"{statistics.fmean(expected):.2f}%)")
    assert row["test_accuracy_pct"] != pytest.approx(row["test_accuracy_without_copies_pct"])  # 10 of 60 tiles out


def test_near_copies_are_counted_and_left_out_with_the_exact_ones(tmp_path):
    results = make_results("copied", accuracy=0.7)
    predictions = results["test_predictions"]
    exact, near = predictions["ids"][:4], predictions["ids"][4:10]
    results["duplicate_tiles"] = {**_copies(len(exact), 0, 0, near=near), "copied_ids": {"val": [], "test": exact}}
    write_results(tmp_path / "copied" / "results.json", results)
    kept = [label == predicted for tile, label, predicted
            in zip(predictions["ids"], predictions["labels"], predictions["predictions"]) if tile not in exact + near]
    row = _rows(tmp_path)["copied"]
    assert (row["test_tile_copies"], row["test_tile_near_copies"]) == (4, 6)
    assert row["test_accuracy_without_copies_pct"] == pytest.approx(100 * statistics.fmean(kept))
    without = 100 * statistics.fmean(kept)
    assert row["data"].endswith("; 4 test tiles copying train/val tiles and 6 nearly copying them (rotated, flipped, "
                                f"re-saved, resized or recoloured) (test accuracy without them {without:.2f}%)")
    results["duplicate_tiles"] = _copies(0, 0, 0, near=near[:1])
    results["duplicate_tiles"]["near_copies"]["label_conflicts"] = 1
    write_results(tmp_path / "copied" / "results.json", results)
    assert _rows(tmp_path)["copied"]["near_copy_label_conflicts"] == 1
    assert _rows(tmp_path)["copied"]["data"].endswith("%); 1 near-copy under another label")
    assert ("; 1 test tile nearly copying train/val tiles (rotated, flipped, re-saved, resized or recoloured) (test "
            "accuracy without them") in _rows(tmp_path)["copied"]["data"]


def test_rows_split_by_patient_get_an_accuracy_ci_over_their_test_groups(tmp_path):
    from flaxbench.group_intervals import group_accuracy_interval

    seeds = [make_results("grouped", seed=seed, accuracy=0.8, num_tiles=120) for seed in (0, 1)]
    few = make_results("few", accuracy=0.7, num_tiles=60, tile_prefix="few")
    for results, pattern in [*((r, r"test_\d*?(\d)\.tif") for r in seeds), (few, r"(few)_")]:
        results["group_by"] = pattern  # the last digit of the tile number: 10 groups; every tile in one
    for results in (*seeds, few, make_results("plain", accuracy=0.6)):
        write_results(tmp_path / results["name"] / f"seed_{results['seed']}" / "results.json", results)
    rows = _rows(tmp_path)
    by_id = [correct_by_id(r) for r in seeds]
    ids = sorted(by_id[0])
    expected = group_accuracy_interval([sum(seed[t] for seed in by_id) for t in ids], [2] * len(ids),
                                       [t.rsplit(".", 1)[0][-1] for t in ids])  # seeds pooled, a tile counted once
    grouped = rows["grouped"]
    assert grouped["test_groups"] == 10 and expected.groups == 10
    assert (grouped["test_accuracy_group_ci95_low_pct"], grouped["test_accuracy_group_ci95_high_pct"]) == (
        pytest.approx(100 * expected.interval[0]), pytest.approx(100 * expected.interval[1]))
    assert grouped["test_groups_design_effect"] == pytest.approx(expected.design_effect)
    assert rows["few"]["test_groups"] == 1 and rows["few"]["test_accuracy_group_ci95_low_pct"] is None
    assert rows["plain"]["test_groups"] is None and rows["plain"]["test_accuracy_group_ci95_high_pct"] is None


def test_rows_split_by_the_best_rows_groups_are_compared_with_it_over_the_groups(tmp_path):
    from flaxbench.group_intervals import group_paired_comparison

    pattern = r"test_\d*?(\d)\.tif"  # the last digit of the tile number: 10 groups
    runs = [make_results(name, accuracy=accuracy, num_tiles=120)
            for name, accuracy in (("best", 0.9), ("mid", 0.75), ("low", 0.6), ("otherwise", 0.7))]
    for results in runs:
        results["group_by"] = pattern if results["name"] != "otherwise" else r"^(\w+)/"
        write_results(tmp_path / results["name"] / "results.json", results)
    rows = _rows(tmp_path)
    best = correct_by_id(runs[0])
    ids = sorted(best)
    expected = {name: group_paired_comparison([correct_by_id(results)[t] for t in ids], [best[t] for t in ids],
                                              [t.rsplit(".", 1)[0][-1] for t in ids])
                for name, results in (("mid", runs[1]), ("low", runs[2]))}
    for name, found in expected.items():
        row = rows[name]
        assert row["p_vs_best_groups"] == pytest.approx(found.p_value)
        assert (row["accuracy_vs_best_group_ci95_low_pct"], row["accuracy_vs_best_group_ci95_high_pct"]) == (
            pytest.approx(100 * found.interval[0]), pytest.approx(100 * found.interval[1]))
        assert row["accuracy_vs_best_pct"] == pytest.approx(100 * found.difference)
    holm = metrics.holm_adjusted([expected["mid"].p_value, expected["low"].p_value])
    assert [rows["mid"]["p_vs_best_groups_holm"], rows["low"]["p_vs_best_groups_holm"]] == pytest.approx(holm)
    assert rows["best"]["p_vs_best_groups"] is None
    assert rows["otherwise"]["p_vs_best_groups"] is None and rows["otherwise"]["mcnemar_p_vs_best"] is not None
