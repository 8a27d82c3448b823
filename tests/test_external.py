"""`evaluate --external`: a trained run tested on labelled tiles from elsewhere, and the report's table of them."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from data_pipeline import DataError
from flaxbench.errors import WorkdirError
from flaxbench.external import evaluate_external, external_filename, match_class_folders
from flaxbench.train.evaluate import evaluate_workdir
from tests.helpers import SHARED_DATA, run_cli, unwritable

KATHER = SHARED_DATA / "kather2016_sample"
NCT = SHARED_DATA / "nct_crc_he_sample"

pytestmark = pytest.mark.skipif(not (KATHER.is_dir() and NCT.is_dir()), reason=f"sample tiles not found in {SHARED_DATA}")


@pytest.fixture(scope="module")
def renamed_test_tiles(kather_run, tmp_path_factory) -> tuple[Path, dict, str]:
    """(folder, the run's own test evaluation, class map): its test tiles under other folder names, plus a left-out folder."""
    own = evaluate_workdir(kather_run, "test")
    folder = tmp_path_factory.mktemp("external") / "cohort B"
    for tile_id, label in zip(own["predictions"]["ids"], own["predictions"]["labels"]):
        target = folder / f"C{label}" / Path(tile_id).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(KATHER / tile_id, target)
    (folder / "MUS").mkdir()
    shutil.copy(sorted((NCT / "MUS").iterdir())[0], folder / "MUS")
    class_map = ",".join(f"C{k}={name}" for k, name in enumerate(own["classes"]))
    return folder, own, class_map


def test_renamed_test_tiles_score_as_the_runs_own_test_split(kather_run, renamed_test_tiles, capsys):
    folder, own, class_map = renamed_test_tiles
    result, path = evaluate_external(kather_run, str(folder), class_map=class_map, out=kather_run / "b.json")
    assert path == kather_run / "b.json" and json.loads(path.read_text())["tiles"] == result["tiles"] == 8
    by_name = {Path(i).name: k for k, i in enumerate(own["predictions"]["ids"])}
    order = [by_name[Path(i).name] for i in result["predictions"]["ids"]]
    assert result["predictions"]["labels"] == [own["predictions"]["labels"][k] for k in order]
    np.testing.assert_allclose(result["predictions"]["probabilities"],
                               np.asarray(own["predictions"]["probabilities"])[order], atol=1e-5)
    assert result["accuracy"] == pytest.approx(own["accuracy"])
    assert result["loss"] == pytest.approx(own["loss"], abs=1e-5)
    assert result["confusion_matrix"] == own["confusion_matrix"]
    assert result["temperatures"] == [own["temperature"]]  # scaled as the run's own evaluation is
    assert result["loss_temperature_scaled"] == pytest.approx(own["loss_temperature_scaled"], abs=1e-5)
    assert result["ece_temperature_scaled"] == pytest.approx(own["ece_temperature_scaled"], abs=1e-5)
    low, high = result["accuracy_ci"]
    assert 0.0 <= low <= result["accuracy"] <= high <= 1.0
    low, high = result["macro_auc_ci"]
    assert 0.0 <= low <= result["macro_auc"] <= high <= 1.0
    for name, values in result["per_class"].items():  # one tile a class: wide CIs that hold the values
        assert values["recall_ci"][0] <= values["recall"] <= values["recall_ci"][1], name
        assert values["recall_ci"][1] - values["recall_ci"][0] > 0.5 and values["f1_ci"] is not None
    assert result["class_folders"] == {f"C{k}": name for k, name in enumerate(own["classes"])}
    assert result["left_out_folders"] == ["MUS"] and result["absent_classes"] == []
    # the run's own test tiles, found by their pixels: not trained on, so no warning
    assert result["seen_by_runs"] == {"train": 0, "val": 0, "test": 8, "near": {"train": 0, "val": 0, "test": 0},
                                      "examples": [], "trained_ids": []}
    assert result["accuracy_without_seen"] is None
    err = capsys.readouterr().err
    assert "left out, not classes of the run: MUS" in err and "pixel-identical" not in err


def test_a_result_that_cannot_be_written_fails_before_any_tile_is_scored(kather_run, renamed_test_tiles, tmp_path,
                                                                          capsys):
    folder, _, class_map = renamed_test_tiles
    locked = tmp_path / "locked"
    locked.mkdir()
    with unwritable(locked), pytest.raises(OSError) as raised:
        evaluate_external(kather_run, str(folder), class_map=class_map, out=locked / "sub" / "b.json")
    assert raised.value.filename == str(locked / "sub" / "b.json")
    assert "left out" not in capsys.readouterr().err  # said of the tiles once they are scored: none were


def test_two_tile_sets_of_one_name_keep_a_result_each(kather_run, renamed_test_tiles, tmp_path):
    folder, _, class_map = renamed_test_tiles
    twin = tmp_path / "elsewhere" / folder.name  # another cohort's folder of the same name
    shutil.copytree(folder, twin)
    first, first_path = evaluate_external(kather_run, str(folder), class_map=class_map)
    second, second_path = evaluate_external(kather_run, str(twin), class_map=class_map)
    assert first_path != second_path and first_path.is_file() and second_path.is_file()  # before: refused
    assert json.loads(first_path.read_text())["external"] == str(folder)
    assert json.loads(second_path.read_text())["external"] == str(twin)
    with pytest.raises(WorkdirError, match="already exists"):  # the same tiles again: still refused
        evaluate_external(kather_run, str(twin), class_map=class_map)
    for path in (first_path, second_path):
        path.unlink()


def test_folders_named_as_the_run_classes_need_no_map_and_absent_classes_are_recorded(kather_run, tmp_path,
                                                                                       capsys):
    folder = tmp_path / "cohort"
    for name in ("TUM", "LYM"):
        shutil.copytree(NCT / name, folder / {"TUM": "Tumor", "LYM": "02 lympho"}[name])
    result, _ = evaluate_external(kather_run, str(folder))
    assert result["class_folders"] == {"02 lympho": "lympho", "Tumor": "tumor"}
    counts = result["tiles_per_class"]
    assert counts["tumor"] == counts["lympho"] == 12 and sum(counts.values()) == 24
    assert set(result["absent_classes"]) == set(result["classes"]) - {"tumor", "lympho"}
    # a class without tiles has no recall or AUC, nor their CIs; 12 tiles of tumor do
    absent = result["per_class"][result["absent_classes"][0]]
    assert absent["recall_ci"] is None and absent["auc_ci"] is None and absent["specificity_ci"] is not None
    assert result["per_class"]["tumor"]["recall_ci"] is not None and result["per_class"]["tumor"]["auc_ci"] is not None
    assert result["resized_from"] == {"224x224": 24}
    err = capsys.readouterr().err
    assert "resized to the run's 32x32 px: 24 tiles at 224x224 px" in err
    assert "over the 2 classes present" in err
    assert (kather_run / "eval_external_cohort.json").is_file()


def test_a_zip_scores_as_the_folder(kather_run, renamed_test_tiles, tmp_path):
    folder, _, class_map = renamed_test_tiles
    archive = tmp_path / "cohort.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for tile in sorted(folder.rglob("*.tif")):
            out.write(tile, f"cohort/{tile.relative_to(folder).as_posix()}")
    from_zip, _ = evaluate_external(kather_run, f"folder:{archive}", class_map=class_map, out=tmp_path / "z.json")
    from_folder, _ = evaluate_external(kather_run, str(folder), class_map=class_map, out=tmp_path / "f.json")
    assert external_filename(f"{archive}", "last", tta=True) == "eval_external_cohort_last_tta.json"
    for key in ("accuracy", "loss", "confusion_matrix", "accuracy_ci"):
        assert from_zip[key] == from_folder[key], key


@pytest.mark.parametrize("class_map, message", [
    ("C0=tumour", "maps 'c0' to 'tumour', which is not a class of the run"),
    ("XX=tumor", "names folder 'xx', which"),
    ("C0tumor", "is not FOLDER=CLASS"),
])
def test_a_bad_class_map_is_an_error_naming_it(kather_run, renamed_test_tiles, tmp_path, class_map, message):
    folder, _, _ = renamed_test_tiles
    with pytest.raises(WorkdirError, match=message):
        evaluate_external(kather_run, str(folder), class_map=class_map, out=tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_a_class_map_naming_an_empty_folder_says_it_holds_no_tiles(kather_run, renamed_test_tiles, tmp_path):
    folder, _, class_map = renamed_test_tiles
    copy = shutil.copytree(folder, tmp_path / "cohort")
    (copy / "EMPTY").mkdir()  # there, but without tiles: not a class folder
    with pytest.raises(WorkdirError, match="names folder 'empty', which .* does not have with tiles in it"):
        evaluate_external(kather_run, str(copy), class_map=f"{class_map},EMPTY=tumor", out=tmp_path / "x.json")


def test_no_folder_of_a_run_class_is_an_error_suggesting_a_class_map(kather_run, renamed_test_tiles, tmp_path):
    folder, _, _ = renamed_test_tiles
    with pytest.raises(WorkdirError, match=r"none of the class folders .* --class-map"):
        evaluate_external(kather_run, str(folder), out=tmp_path / "x.json")


def test_the_runs_own_tiles_are_refused(kather_run, tmp_path):
    with pytest.raises(WorkdirError, match="run's own train, val and test tiles"):
        evaluate_external(kather_run, str(KATHER), out=tmp_path / "x.json")


def test_an_existing_result_is_kept_unless_overwrite_and_errors_are_one_line(kather_run, renamed_test_tiles,
                                                                            tmp_path):
    folder, _, class_map = renamed_test_tiles
    out = tmp_path / "earlier.json"
    out.write_text("{}")
    args = ("evaluate", f"--workdir={kather_run}", f"--external={folder}", f"--class-map={class_map}", f"--out={out}")
    proc = run_cli(*args)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "already exists" in proc.stderr and out.read_text() == "{}"
    proc = run_cli(*args, "--overwrite")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[external: 8 tiles]" in proc.stdout and json.loads(out.read_text())["tiles"] == 8
    proc = run_cli("evaluate", f"--workdir={kather_run}", f"--class-map={class_map}")
    assert proc.returncode == 2 and "only with --external" in proc.stderr and "Traceback" not in proc.stderr


def test_the_report_lists_each_runs_external_results(kather_run, renamed_test_tiles, tmp_path):
    from flaxbench.report import write_report

    folder, own, class_map = renamed_test_tiles
    runs = kather_run.parent
    evaluate_external(kather_run, str(folder), class_map=class_map, tta=True, overwrite=True)
    plain, _ = evaluate_external(kather_run, str(folder), class_map=class_map, overwrite=True)
    written = write_report(runs, tmp_path / "report")
    external = json.loads(written["json"].read_text())["external"]
    line = next(e for e in external if e["file"].endswith("eval_external_cohort_B_tta.json"))
    assert line["tta"] and line["tiles"] == 8 and line["external"] == str(folder)
    assert line["own_test_accuracy"] == pytest.approx(own["accuracy"])
    text = written["md"].read_text()
    # the run's own test tiles, from slides its tile-level split also trained on as its data.json counts them
    shared = json.loads((kather_run / "data.json").read_text())["shared_groups"]["shared_tiles"]
    assert plain["seen_groups"]["tiles"] == shared
    tiles = "8" + (f" ({shared} from Kather 2016 slides trained on; accuracy without them "
                   f"{100 * plain['accuracy_without_seen_groups']:.1f}%)" if shared else "")
    assert "## External test sets" in text and f"`{folder}` | {tiles} | best, TTA |" in text
    # ECE, and after temperature scaling where the run's temperature applies (not to TTA)
    tta_line = text.split(f"`{folder}` | {tiles} | best, TTA |")[1].splitlines()[0]
    plain_line = text.split(f"`{folder}` | {tiles} | best |")[1].splitlines()[0]
    assert f"| {line['ece']:.3f} |" in tta_line
    assert f"| {plain['ece']:.3f} ({plain['ece_temperature_scaled']:.3f}) |" in plain_line
    assert written["external_accuracy"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(external_accuracy.png)" in text
    broken = kather_run / "eval_external_broken.json"
    for text, problem in (('{"external": "x"}', "no 'checkpoint'"),
                          (json.dumps({**line, "accuracy_ci": [0.5]}), "'accuracy_ci' is not [low, high]"),
                          (json.dumps({**line, "macro_auc_ci": "0.9"}), "'macro_auc_ci' is not [low, high] or null")):
        broken.write_text(text)
        try:
            proc = run_cli("report", str(runs), f"--out={tmp_path / 'again'}")
        finally:
            broken.unlink()
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"eval_external_broken.json: not an external evaluation ({problem})" in proc.stderr



def test_lines_on_the_same_tiles_are_paired_against_the_most_accurate(kather_run, renamed_test_tiles, tmp_path):
    from flaxbench.report.collect import collect_runs
    from flaxbench.report.external import external_section
    from flaxbench.report.summary import summarize

    folder, _, class_map = renamed_test_tiles
    runs = tmp_path / "runs"
    shutil.copytree(kather_run, runs / "a", ignore=shutil.ignore_patterns("eval_external_*"))
    evaluate_external(runs / "a", str(folder), class_map=class_map)
    # Another row whose evaluation of the same tiles got every tile right.
    shutil.copytree(runs / "a", runs / "b")
    results = json.loads((runs / "b" / "results.json").read_text())
    (runs / "b" / "results.json").write_text(json.dumps({**results, "name": "perfect"}))
    path = runs / "b" / "eval_external_cohort_B.json"
    record = json.loads(path.read_text())
    wrong = sum(p != y for p, y in zip(record["predictions"]["predictions"], record["predictions"]["labels"]))
    assert wrong > 0  # a one-epoch model
    record["predictions"]["predictions"] = record["predictions"]["labels"]
    path.write_text(json.dumps({**record, "accuracy": 1.0}))
    lines = {line["name"]: line for line in summarize(collect_runs(runs)).external}
    assert lines["perfect"]["best_on_these_tiles"] and lines["perfect"]["mcnemar_p_vs_best"] is None
    # Exact McNemar: all `wrong` discordant tiles go one way, p = 2 * 0.5**wrong (at most 1).
    assert lines["tiny"]["mcnemar_p_vs_best"] == pytest.approx(min(1.0, 2 * 0.5**wrong))
    table = "\n".join(external_section(list(lines.values())))
    assert "| best |" in table


def test_center_crop_keeps_the_middle_of_each_tile_before_resizing(kather_run, tmp_path):
    from data_pipeline import load_image
    from data_pipeline.images import resize_square
    from flaxbench.inference import load_trained_run

    folder = tmp_path / "cohort"
    shutil.copytree(NCT / "TUM", folder / "TUM")
    shutil.copytree(NCT / "STR", folder / "STR")
    result, _ = evaluate_external(kather_run, str(folder), class_map="TUM=tumor,STR=stroma", center_crop=148,
                                  out=tmp_path / "c.json")
    assert result["center_crop"] == 148 and result["resized_from"] == {"148x148": 24}
    # The same scores as the model on the tiles' central 148 px, resized as training resizes.
    run = load_trained_run(kather_run, "best")
    paths = [folder / tile_id for tile_id in result["predictions"]["ids"]]
    images = np.stack([resize_square(load_image(p)[38:186, 38:186], 32) for p in paths])
    expected = np.exp(run.logits(images))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(result["predictions"]["probabilities"], expected, atol=1e-5)
    with pytest.raises(DataError, match=r"is 224x224 px, smaller than the 300 px center crop"):
        evaluate_external(kather_run, str(folder), class_map="TUM=tumor", center_crop=300, out=tmp_path / "x.json")
    with pytest.raises(WorkdirError, match="--center-crop must be a positive number of pixels"):
        evaluate_external(kather_run, str(folder), center_crop=0, out=tmp_path / "x.json")


def test_predict_center_crop_predicts_a_tile_as_its_cropped_copy(kather_run, tmp_path):
    import csv

    from PIL import Image

    from data_pipeline import load_image
    from flaxbench.predict import predict_paths

    original = sorted((NCT / "TUM").iterdir())[0]
    cropped = tmp_path / "cropped.png"
    Image.fromarray(load_image(original)[38:186, 38:186]).save(cropped)  # lossless
    out = predict_paths(kather_run, [str(original), str(cropped)], tmp_path / "p.csv", center_crop=148)
    with out.open(newline="") as stream:
        rows = {row[0]: row[1:] for row in list(csv.reader(stream))[1:]}
    assert rows[str(original)] == rows[str(cropped)]
    with pytest.raises(WorkdirError, match="--center-crop must be a positive number of pixels"):
        predict_paths(kather_run, [str(original)], tmp_path / "q.csv", center_crop=-1)


def test_predict_temperature_scaled_gives_the_calibrated_probabilities_of_the_same_classes(kather_run, tmp_path,
                                                                                          capsys):
    import csv

    from flaxbench.predict import predict_paths

    def predicted(out: Path) -> tuple[list[str], np.ndarray]:
        with out.open(newline="") as stream:
            rows = list(csv.reader(stream))[1:]
        return [row[1] for row in rows], np.array([[float(x) for x in row[2:]] for row in rows])

    tiles = [str(NCT / "TUM"), str(NCT / "LYM")]
    plain_classes, plain = predicted(predict_paths(kather_run, tiles, tmp_path / "plain.csv"))
    scaled_classes, scaled = predicted(predict_paths(kather_run, tiles, tmp_path / "scaled.csv",
                                                     temperature_scaled=True))
    temperature = json.loads((kather_run / "results.json").read_text())["temperature"]
    assert f"temperature-scaled (T {temperature:.3g})" in capsys.readouterr().out
    assert scaled_classes == plain_classes
    # softmax(logits / T) is softmax(logits) to the power 1/T, renormalised
    powered = plain ** (1 / temperature)
    np.testing.assert_allclose(scaled, powered / powered.sum(axis=1, keepdims=True), atol=2e-3)
    for options, message in (({"which": "last"}, "fitted to the best checkpoint, not the last one"),
                             ({"tta": True}, "fitted to single-view logits, not to the 8-view TTA average")):
        with pytest.raises(WorkdirError, match=f"--temperature-scaled: the temperature was {message}"):
            predict_paths(kather_run, tiles, tmp_path / "no.csv", temperature_scaled=True, **options)
    older = tmp_path / "older"
    shutil.copytree(kather_run, older)
    results = json.loads((older / "results.json").read_text())
    del results["temperature"]
    (older / "results.json").write_text(json.dumps(results))
    with pytest.raises(WorkdirError, match="results.json' records no temperature"):
        predict_paths(older, tiles, tmp_path / "no.csv", temperature_scaled=True)
    assert not (tmp_path / "no.csv").exists()


def test_the_class_map_suggested_for_unmatched_folders_is_near_their_names_and_quoted_for_the_shell():
    with pytest.raises(WorkdirError, match=r"\(e\.g\. --class-map '01 Fett gewebe=CLASS'\)$"):  # none near
        match_class_folders(["01 Fett gewebe"], ["adi", "lym"], {}, "'/data/x'")
    with pytest.raises(WorkdirError, match=r"\(e\.g\. --class-map 01_TUMOR=tum\)$"):  # not 'adi', the first
        match_class_folders(["01_TUMOR", "02_STROMA"], ["adi", "str", "tum"], {}, "'/data/x'")
