"""Evaluating a run from its checkpoint against the tiles it was trained on (CPU, seconds)."""

import shutil
from pathlib import Path

import pytest

from data_pipeline import DataError
from flaxbench.errors import WorkdirError
from flaxbench.train.evaluate import evaluate_workdir, read_run_spec
from flaxbench.train.loop import train_and_evaluate
from tests.data_pipeline.helpers import random_tile, write_tiles
from tests.helpers import SHARED_DATA, tiny_spec


def test_evaluate_and_resume_refuse_data_that_changed_since_training(tmp_path, monkeypatch):
    from PIL import Image

    source = write_tiles(tmp_path / "tiles", {"a": 8, "b": 8, "c": 8}, size=32)
    monkeypatch.chdir(tmp_path)  # a relative source: evaluate elsewhere uses data.json's absolute path
    spec = tiny_spec(**{"data.source": "folder:tiles", "data.classes": None, "data.split": (12, 6, 6),
                        "train.epochs": 1})
    workdir = tmp_path / "run"
    train_and_evaluate(spec, workdir, log=lambda s: None)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    (source / "c").rename(source / "0_c")  # the same class, now first in label order
    with pytest.raises(WorkdirError, match=r"classes: \['a', 'b', 'c'\] then, \['c', 'a', 'b'\] now"):
        evaluate_workdir(workdir, "test")
    (source / "0_c").rename(source / "c")
    Image.fromarray(random_tile(99, 32)).save(source / "a" / "added.png")  # same counts, other tiles
    with pytest.raises(WorkdirError, match="differs from what the run .* the tiles or labels of a split"):
        evaluate_workdir(workdir, "test")
    monkeypatch.chdir(tmp_path)
    (workdir / "results.json").unlink()  # as if interrupted: the same command resumes
    with pytest.raises(WorkdirError, match="the tiles or labels of a split"):
        train_and_evaluate(spec, workdir, log=lambda s: None)
    (source / "a" / "added.png").unlink()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert evaluate_workdir(workdir, "test")["classes"] == ["a", "b", "c"]


@pytest.fixture
def folder_run(tmp_path):
    """(tile folder, workdir, results) of a one-epoch run on a folder of 16 tiles."""
    source = write_tiles(tmp_path / "tiles", {"a": 8, "b": 8}, size=32)
    spec = tiny_spec(**{"data.source": f"folder:{source}", "data.classes": None, "data.split": (8, 4, 4),
                        "train.epochs": 1})
    workdir = tmp_path / "run"
    results = train_and_evaluate(spec, workdir, log=lambda s: None)
    return source, workdir, results


def test_evaluate_reads_tiles_that_moved_from_where_they_are_now(tmp_path, folder_run):
    source, workdir, results = folder_run
    moved = source.rename(tmp_path / "moved")
    with pytest.raises(WorkdirError, match=f"no longer at '{source}'.*--source=folder:NEW_PATH"):
        evaluate_workdir(workdir, "test")
    evaluated = evaluate_workdir(workdir, "test", source=f"folder:{moved}")
    assert (evaluated["accuracy"], evaluated["loss"]) == (results["test_accuracy"], results["test_loss"])
    assert evaluated["source"] == f"folder:{moved}"
    with pytest.raises(WorkdirError, match="--tfds-data-dir is for runs trained on a TFDS dataset"):
        evaluate_workdir(workdir, "test", source=f"folder:{moved}", tfds_data_dir=str(moved))
    tile = sorted((moved / "a").iterdir())[0]
    shutil.copy(tile, moved / "b" / f"extra{tile.suffix}")  # one tile more: not the tiles it trained on
    with pytest.raises(WorkdirError, match="differs from what the run"):
        evaluate_workdir(workdir, "test", source=f"folder:{moved}")


def test_evaluate_reads_only_the_tiles_of_the_split_it_scores(folder_run):
    source, workdir, results = folder_run
    test_ids = set(results["test_predictions"]["ids"])
    for tile in sorted(source.rglob("*.png")):
        if tile.relative_to(source).as_posix() not in test_ids:
            tile.write_bytes(b"damaged after training")  # every train and val tile
    evaluated = evaluate_workdir(workdir, "test")
    assert (evaluated["accuracy"], evaluated["loss"]) == (results["test_accuracy"], results["test_loss"])
    assert evaluated["predictions"] == results["test_predictions"]
    with pytest.raises(DataError, match="bad file .*it was read when the run trained: restore the data") as raised:
        evaluate_workdir(workdir, "val")
    assert "skip_bad_files" not in str(raised.value)  # skipping it would score other tiles than the run's


def test_evaluate_of_a_tfds_run_decodes_only_the_split_it_scores(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    from data_pipeline.sources import tfds_source
    from tests.data_pipeline import tfds_sample

    tiles = SHARED_DATA / "kather2016_sample"
    if not tiles.is_dir():
        pytest.skip(f"sample tiles not found at {tiles}")
    data_dir = tfds_sample.prepare(tmp_path / "tfds", tiles, copies=2)  # colorectal_histology, 6 tiles a class
    spec = tiny_spec(**{"data.source": "tfds:colorectal_histology", "data.tfds_data_dir": str(data_dir),
                        "data.classes": ("tumor", "stroma", "lympho", "mucosa"), "data.split": (12, 6, 6),
                        "train.epochs": 1})
    results = train_and_evaluate(spec, tmp_path / "run", log=lambda s: None)
    decoded = []
    decode = tfds_source._decoded_tile
    monkeypatch.setattr(tfds_source, "_decoded_tile",
                        lambda stored, **kw: decoded.append(stored[0]) or decode(stored, **kw))
    evaluated = evaluate_workdir(tmp_path / "run", "test")
    assert (evaluated["accuracy"], evaluated["loss"]) == (results["test_accuracy"], results["test_loss"])
    assert sorted(decoded) == sorted(results["test_predictions"]["ids"])
    moved = Path(data_dir).rename(tmp_path / "tfds_moved")  # e.g. another disk
    with pytest.raises(WorkdirError, match=f"TFDS data folder '{data_dir}' .* is not there.*--tfds-data-dir"):
        evaluate_workdir(tmp_path / "run", "test")
    evaluated = evaluate_workdir(tmp_path / "run", "test", tfds_data_dir=str(moved))
    assert (evaluated["accuracy"], evaluated["loss"]) == (results["test_accuracy"], results["test_loss"])


def test_evaluate_refuses_a_stain_reference_that_changed_since_training(tmp_path):
    from tests.helpers import SHARED_DATA

    kather = SHARED_DATA / "kather2016_sample"
    reference = tmp_path / "reference.tif"
    shutil.copy(sorted((kather / "01_TUMOR").glob("*.tif"))[0], reference)
    spec = tiny_spec(**{"data.source": f"folder:{kather}", "data.classes": ("tumor", "stroma", "mucosa"),
                        "data.split": (3, 3, 3), "data.stain_normalize": "macenko",
                        "data.stain_reference": str(reference), "train.epochs": 1, "train.batch_size": 3})
    results = train_and_evaluate(spec, tmp_path / "run", log=lambda s: None)
    assert evaluate_workdir(tmp_path / "run", "test")["loss"] == results["test_loss"]
    shutil.copy(sorted((kather / "02_STROMA").glob("*.tif"))[0], reference)  # same path, other stains
    with pytest.raises(WorkdirError, match="the stain target .spec.data.stain_reference changed"):
        evaluate_workdir(tmp_path / "run", "test")


def test_a_folder_that_changed_is_refused_before_its_tiles_are_decoded(folder_run):
    source, workdir, results = folder_run
    for tile in source.rglob("*.png"):
        tile.write_bytes(b"damaged")  # decoding any of them would fail with a bad-file error
    (source / "a" / "added.png").write_bytes(b"damaged")
    with pytest.raises(WorkdirError, match="the tiles or labels of a split"):
        evaluate_workdir(workdir, "test")
    (workdir / "results.json").unlink()  # as if interrupted: the same command resumes
    with pytest.raises(WorkdirError, match="the tiles or labels of a split.*start the run over with --overwrite"):
        train_and_evaluate(read_run_spec(workdir), workdir, log=lambda s: None)


def test_a_tile_whose_file_was_replaced_under_its_name_is_refused_by_evaluate_and_resume(folder_run):
    from PIL import Image

    source, workdir, results = folder_run
    test_ids = results["test_predictions"]["ids"]
    train_id = next(tile.relative_to(source).as_posix() for tile in sorted(source.rglob("*.png"))
                    if tile.relative_to(source).as_posix() not in test_ids)
    for tile_id in (test_ids[0], train_id):
        original = (source / tile_id).read_bytes()
        Image.fromarray(random_tile(98, 32)).save(source / tile_id)  # the same name and label, other pixels
        if tile_id in test_ids:
            with pytest.raises(WorkdirError, match=rf"1 of the 4 test tiles of folder:.* decode to other pixels than "
                                                   rf"the run .* \(e.g. '{tile_id}'"):
                evaluate_workdir(workdir, "test")
        (workdir / "results.json").rename(workdir / "results.kept")  # as if interrupted: the same command resumes
        with pytest.raises(WorkdirError, match="(train|test) tiles .* decode to other pixels.*start the run over"):
            train_and_evaluate(read_run_spec(workdir), workdir, log=lambda s: None)
        (workdir / "results.kept").rename(workdir / "results.json")
        (source / tile_id).write_bytes(original)
    assert evaluate_workdir(workdir, "test")["accuracy"] == results["test_accuracy"]


def test_a_run_split_by_patient_reports_its_accuracy_ci_over_the_patients(tmp_path):
    import json
    import re

    import numpy as np

    from flaxbench.group_design_effects import group_design_fields
    from flaxbench.group_intervals import group_accuracy_interval, group_class_intervals
    from flaxbench.report import write_report

    # tile_<k> of class a and of class b come from patient k
    source = write_tiles(tmp_path / "tiles", {"a": 40, "b": 40}, size=32)
    spec = tiny_spec(**{"data.source": f"folder:{source}", "data.classes": None, "data.split": (0.5, 0.25, 0.25),
                        "data.group_by": r"tile_(\d+)", "train.epochs": 1})
    lines = []
    train_and_evaluate(spec, tmp_path / "run", log=lines.append)
    out = evaluate_workdir(tmp_path / "run", "test")
    predictions = out["predictions"]
    patients = [re.search(r"tile_(\d+)", tile).group(1) for tile in predictions["ids"]]
    expected = group_accuracy_interval(np.equal(predictions["labels"], predictions["predictions"]), None, patients)
    assert out["groups"] == len(set(patients)) >= 5
    assert out["accuracy_ci_groups"] == list(expected.interval)
    assert out["design_effect_groups"] == expected.design_effect
    assert f"% over {out['groups']} groups)" in lines[-1]  # the run's closing metrics line
    # each class's recall, precision and specificity over the patients too: in eval_test.json and the report
    labels, said = np.asarray(predictions["labels"]), np.eye(2, dtype=int)[predictions["predictions"]]
    by_class = group_class_intervals(labels == predictions["predictions"], np.ones(len(labels)), labels, said, patients)
    for k, name in enumerate(("a", "b")):
        for key in ("recall", "precision", "specificity"):
            found = by_class[key][k]
            assert out["per_class"][name][f"{key}_groups"] == found.groups
            assert out["per_class"][name][f"{key}_ci_groups"] == (found.interval and list(found.interval))
        for key in ("f1", "auc"):  # tile-level CIs widened, over the groups holding the class's tiles or all
            wide, tiles = out["per_class"][name][f"{key}_ci_groups"], out["per_class"][name][f"{key}_ci"]
            assert wide[0] <= tiles[0] <= tiles[1] <= wide[1] and out["per_class"][name][f"{key}_groups"] >= 2
    recall = next(v for v in out["per_class"].values() if v["recall_ci_groups"])  # a class found at all
    low, high = recall["recall_ci_groups"]
    # balanced accuracy's and macro AUC's tile-level CIs widened for the patients, never narrowed
    assert {key: out[key] for key in ("balanced_accuracy_ci_groups", "macro_auc_ci_groups")} == group_design_fields(
        predictions, patients, out["balanced_accuracy_ci"], out["macro_auc_ci"])
    for key in ("balanced_accuracy_ci", "macro_auc_ci"):
        assert out[f"{key}_groups"][0] <= out[key][0] <= out[key][1] <= out[f"{key}_groups"][1]
    written = write_report(tmp_path, tmp_path / "report")
    report = written["md"].read_text()
    assert f"; {low:.3f}–{high:.3f} over {recall['recall_groups']})" in report.split("### Recall")[1]
    assert "each value's interval over patients or slides follows a semicolon" in report
    row = json.loads(written["json"].read_text())["rows"][0]
    assert row["macro_auc_group_ci95_low"] <= row["macro_auc_ci95_low"] <= row["macro_auc_group_ci95_high"]
    assert f"| [{row['macro_auc_group_ci95_low']:.3f}, {row['macro_auc_group_ci95_high']:.3f}] over " in report
