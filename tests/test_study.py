"""`python -m flaxbench study` and `report` end to end on two tiny demo-derived rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from flaxbench.errors import FlaxbenchError
from flaxbench.study import parse_study_rows
from tests.helpers import REPO, SHARED_DATA, run_cli

FIGURES = ("accuracy_vs_time.png", "confusion_matrices.png", "training_curves.png", "per_class_recall.png",
           "roc_curves.png")
REPORT_FILES = ("report.md", "report.csv", "report.json", "report.tex", *FIGURES)

# A row spec that shrinks specs/demo.py; it imports nothing from the repo, it runs the file.
ROW_SPEC = '''\
import runpy


def get_config():
    """specs/demo.py made tiny."""
    c = runpy.run_path({demo!r})["get_config"]()
    c.name = {name!r}
    c.data.synthetic_per_class = 8
    c.data.image_size = 16
    c.data.split = (24, 12, 12)
    c.train.epochs = 1
    c.train.batch_size = 8
    c.mesh.data = 1
    c.model.options = dict(channels=(4, 8, 8), hidden={hidden!r}, dropout={dropout!r})
    return c
'''
# name -> (hidden, dropout). The rows share their conv shapes: each distinct shape costs XLA
# a compile of its random init on CPU.
ROWS = {"tiny_a": (16, 0.0), "tiny_b": (24, 0.25)}
BATCH_OVERRIDE = "--spec.train.batch_size=4"  # the row specs say 8


@pytest.fixture(scope="module")
def spec_files(tmp_path_factory) -> list[Path]:
    """Two tiny row specs with different names and model options."""
    folder = tmp_path_factory.mktemp("specs")
    paths = []
    for name, (hidden, dropout) in ROWS.items():
        path = folder / f"{name}_spec.py"
        path.write_text(ROW_SPEC.format(demo=str(REPO / "specs" / "demo.py"), name=name, hidden=hidden,
                                        dropout=dropout))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory) -> dict[str, str]:
    """Environment sharing one JAX compilation cache between this module's study runs.

    Every study below trains the same two models at the same batch size, so only the first
    run compiles; the rest read XLA's executables from the cache (several seconds each on CPU).
    """
    return {"JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def study(spec_files: list[Path], workdir: Path, *extra: str, env: dict[str, str] | None = None):
    """Run the study command over `spec_files` into `workdir`."""
    return run_cli("study", f"--specs={','.join(map(str, spec_files))}", f"--workdir={workdir}", *extra, env=env)


@pytest.fixture(scope="module")
def finished_study(spec_files, tmp_path_factory, jax_cache):
    """(workdir, first run) of a one-seed study with a batch-size override for every row."""
    workdir = tmp_path_factory.mktemp("study")
    first = study(spec_files, workdir, BATCH_OVERRIDE, env=jax_cache)
    assert first.returncode == 0, first.stderr[-3000:]
    return workdir, first


def read_report_rows(folder: Path) -> list[dict]:
    """Rows of report.json in `folder`."""
    return json.loads((folder / "report.json").read_text())["rows"]


def test_study_trains_every_row_and_writes_the_report(finished_study):
    workdir, first = finished_study
    lines = first.stdout.splitlines()
    for i, name in enumerate(ROWS, 1):
        assert any(line.startswith(f"[{i}/2] {name}: training in") for line in lines), first.stdout
        assert any(line.startswith(f"[{i}/2] {name}: test accuracy") for line in lines), first.stdout
        results = json.loads((workdir / name / "results.json").read_text())
        assert results["name"] == name and results["epochs"] == 1
    for filename in REPORT_FILES:
        assert (workdir / filename).stat().st_size > 0, filename
    assert {row["name"] for row in read_report_rows(workdir)} == set(ROWS)
    with (workdir / "report.csv").open() as stream:
        assert sorted(row["name"] for row in csv.DictReader(stream)) == sorted(ROWS)


def test_override_applies_to_every_row_and_rows_keep_their_own_options(finished_study):
    workdir, _ = finished_study
    params = set()
    for name, (hidden, dropout) in ROWS.items():
        spec = json.loads((workdir / name / "spec.json").read_text())
        assert spec["train"]["batch_size"] == 4
        assert spec["name"] == name
        assert (spec["model"]["options"]["hidden"], spec["model"]["options"]["dropout"]) == (hidden, dropout)
        results = json.loads((workdir / name / "results.json").read_text())
        assert results["batch_size"] == 4
        params.add(results["params"])
    assert len(params) == len(ROWS)  # each row built its own model


def test_second_study_run_skips_finished_rows(spec_files, finished_study, jax_cache):
    workdir, _ = finished_study
    before = {name: (workdir / name / "results.json").read_bytes() for name in ROWS}
    again = study(spec_files, workdir, BATCH_OVERRIDE, env=jax_cache)
    assert again.returncode == 0, again.stderr[-3000:]
    for i, name in enumerate(ROWS, 1):
        assert f"[{i}/2] {name}: complete, skipped" in again.stdout
        assert (workdir / name / "results.json").read_bytes() == before[name]
    assert "training in" not in again.stdout and "epoch   1/1" not in again.stdout
    assert {row["name"] for row in read_report_rows(workdir)} == set(ROWS)


def test_a_new_title_alone_keeps_the_finished_rows(spec_files, finished_study, jax_cache):
    workdir, _ = finished_study
    before = {name: (workdir / name / "results.json").read_bytes() for name in ROWS}
    retitled = study(spec_files, workdir, BATCH_OVERRIDE, "--spec.title=Renamed ({init})", env=jax_cache)
    assert retitled.returncode == 0, retitled.stderr[-3000:]
    assert all((workdir / name / "results.json").read_bytes() == before[name] for name in ROWS)


def test_finished_rows_of_another_spec_fail_naming_the_difference(spec_files, finished_study, jax_cache):
    workdir, _ = finished_study
    before = {name: (workdir / name / "results.json").read_bytes() for name in ROWS}
    changed = study(spec_files, workdir, "--spec.train.batch_size=8", env=jax_cache)
    assert changed.returncode != 0 and "Traceback" not in changed.stderr
    assert "spec.train.batch_size (4 before, 8 now) differs" in changed.stderr.strip().splitlines()[-1]
    assert "training in" not in changed.stdout
    assert all((workdir / name / "results.json").read_bytes() == before[name] for name in ROWS)


def test_report_command_writes_to_out_dir(finished_study, tmp_path):
    workdir, _ = finished_study
    out = tmp_path / "report_out"
    proc = run_cli("report", str(workdir), f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for filename in REPORT_FILES:
        assert (out / filename).stat().st_size > 0, filename
        assert str(out / filename) in proc.stdout
    assert read_report_rows(out) == read_report_rows(workdir)


def test_several_seeds_get_seed_dirs_and_one_report_row_per_name(spec_files, tmp_path, jax_cache):
    proc = study(spec_files, tmp_path, "--seeds=2", BATCH_OVERRIDE, env=jax_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ROWS:
        for seed in (0, 1):
            results = json.loads((tmp_path / name / f"seed_{seed}" / "results.json").read_text())
            assert results["seed"] == seed
            assert f"{name} seed {seed}: test accuracy" in proc.stdout
        assert not (tmp_path / name / "results.json").exists()
    rows = read_report_rows(tmp_path)
    assert sorted(row["name"] for row in rows) == sorted(ROWS)
    assert all(row["seeds"] == 2 and sorted(row["seed_values"]) == [0, 1] for row in rows)


def test_misspelled_study_override_is_one_line_naming_the_key(spec_files, tmp_path):
    proc = study(spec_files, tmp_path, "--spec.train.bach_size=4")
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert "bach_size" in err
    assert not any(tmp_path.iterdir())


def test_study_rows_parse_in_the_given_order_and_unknown_or_empty_lists_name_the_flag():
    assert parse_study_rows("resnet18, vit_p15", "--rows") == ["resnet18", "vit_p15"]
    with pytest.raises(FlaxbenchError, match="--rows: vit_p16 is not a study row; choose from vit_p10"):
        parse_study_rows("vit_p16", "--rows")
    with pytest.raises(FlaxbenchError, match="--models is empty"):
        parse_study_rows(" , ", "--models")


def test_more_seeds_later_reuse_the_finished_single_seed_runs(spec_files, finished_study, tmp_path, jax_cache):
    import shutil

    workdir = tmp_path / "study"
    shutil.copytree(finished_study[0], workdir)
    before = {name: (workdir / name / "results.json").read_bytes() for name in ROWS}
    proc = study(spec_files, workdir, "--seeds=2", BATCH_OVERRIDE, env=jax_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ROWS:
        assert f"{name} seed 0: complete, skipped ({workdir / name / 'results.json'})" in proc.stdout
        assert (workdir / name / "results.json").read_bytes() == before[name]
        assert not (workdir / name / "seed_0").exists()
        assert json.loads((workdir / name / "seed_1" / "results.json").read_text())["seed"] == 1
    assert all(row["seeds"] == 2 for row in read_report_rows(workdir))


def test_rows_and_seeds_on_the_same_tiles_decode_them_once(spec_files, tmp_path, monkeypatch):
    import data_pipeline.last_dataset
    from flaxbench.study import run_study

    loads = []
    real_load = data_pipeline.last_dataset.load_dataset
    monkeypatch.setattr(data_pipeline.last_dataset, "load_dataset", lambda cfg: loads.append(cfg) or real_load(cfg))
    # Two rows (other models, the same spec.data) with two seeds each: four runs, one decode.
    run_study(spec_files, tmp_path, seeds=2, log=lambda line: None)
    assert len(loads) == 1
    data = {(tmp_path / name / f"seed_{seed}" / "data.json").read_text() for name in ROWS for seed in (0, 1)}
    assert len(data) == 1
    load_times = [json.loads((tmp_path / name / f"seed_{seed}" / "results.json").read_text())["data_load_time_s"]
                  for name in ROWS for seed in (0, 1)]
    assert load_times[0] > 0 and load_times[1:] == [None] * 3  # the first run loaded the tiles, the others reused them


def test_a_row_out_of_memory_fails_alone_and_the_others_are_reported(spec_files, tmp_path):
    from flaxbench.study import run_study

    huge = tmp_path / "tiny_huge_spec.py"  # a 4 TB hidden layer: XLA's allocation fails at once
    huge.write_text(ROW_SPEC.format(demo=str(REPO / "specs" / "demo.py"), name="tiny_huge", hidden=10**12,
                                    dropout=0.0))
    lines = []
    earlier = tmp_path / "study" / "tiny_a" / "failed.json"  # an earlier study's failure of a row that trains now
    earlier.parent.mkdir(parents=True)
    earlier.write_text('{"error": "an earlier failure"}')
    with pytest.raises(FlaxbenchError, match=r"1 of 2 study run\(s\) failed, the others are reported: "
                                             r"tiny_huge: out of memory \(RESOURCE_EXHAUSTED"):
        run_study([huge, spec_files[0]], tmp_path / "study", log=lines.append)
    assert any(line.startswith("[1/2] tiny_huge: FAILED: out of memory") for line in lines), lines
    assert lines[-1].startswith(f"report: {tmp_path / 'study' / 'report.md'}"), lines
    assert (tmp_path / "study" / "tiny_a" / "results.json").is_file() and not earlier.exists()
    assert [row["name"] for row in read_report_rows(tmp_path / "study")] == ["tiny_a"]
    # the failed row is named in the report, with its error, not left out as if never asked for
    report = json.loads((tmp_path / "study" / "report.json").read_text())
    assert report["unfinished_runs"] == ["tiny_huge"] and list(report["failed_runs"]) == ["tiny_huge"]
    assert report["failed_runs"]["tiny_huge"].startswith("out of memory (RESOURCE_EXHAUSTED")
    assert "Of these, 1 failed in the study (fix the cause and run it again): `tiny_huge`: out of memory" in (
        tmp_path / "study" / "report.md").read_text()


def test_an_empty_entry_in_the_study_specs_is_refused_naming_the_list(spec_files, tmp_path):
    from flaxbench.study import run_study

    with pytest.raises(FlaxbenchError, match=r"--specs has an empty entry \(.*tiny_a_spec.py,\)"):
        run_study([spec_files[0], ""], tmp_path / "study")


def test_tiles_read_from_a_new_folder_keep_finished_seeds_if_they_are_the_same(spec_files, tmp_path):
    # A cluster job copies the tiles to its own scratch folder: another spec.data.source, the same tiles.
    from flaxbench.study import run_study
    from tests.data_pipeline.helpers import write_tiles

    first = write_tiles(tmp_path / "job1", {"a": 8, "b": 8, "c": 8}, size=16)
    study_dir = tmp_path / "study"

    def run(folder: Path, seeds: int) -> list[str]:
        lines = []
        overrides = {"data.source": f"folder:{folder}", "data.classes": None, "data.split": (12, 6, 6)}
        run_study(spec_files[:1], study_dir, seeds=seeds, overrides=overrides, log=lines.append)
        return lines

    run(first, seeds=2)
    second = first.rename(tmp_path / "job2")
    lines = run(second, seeds=3)
    assert sum("complete, skipped" in line for line in lines) == 2 and any("seed 2: training" in line for line in lines)
    rows = read_report_rows(study_dir)
    assert [(row["name"], row["seeds"]) for row in rows] == [("tiny_a", 3)]
    tile = sorted((second / "b").iterdir())[0]
    (second / "a" / f"extra{tile.suffix}").write_bytes(tile.read_bytes())  # one tile more: other tiles
    # Seeds 0 and 1 were trained from job1; seed 2, trained from job2 itself, is not checked again.
    with pytest.raises(FlaxbenchError, match=r"2 of 3 study run.*seed_0 was trained on other tiles"):
        run(second, seeds=3)
    (second / "a" / f"extra{tile.suffix}").unlink()
    replaced = sorted((second / "a").iterdir())[0]
    replaced.write_bytes(tile.read_bytes())  # the same names and labels, but one tile's pixels are another's
    with pytest.raises(FlaxbenchError, match=r"2 of 3 study run.*seed_0 was trained on other tiles.*decode to other "
                                             r"pixels .*\(e.g. 'a/"):
        run(second, seeds=3)


def test_folds_train_every_row_on_each_fold_and_report_a_row_of_their_own(spec_files, finished_study, tmp_path,
                                                                          jax_cache):
    import shutil

    from tests.data_pipeline.helpers import write_tiles

    workdir = tmp_path / "study"
    shutil.copytree(finished_study[0], workdir)
    cohort = write_tiles(tmp_path / "cohort", {"TUM": 4, "stroma": 4}, size=24)
    proc = study(spec_files, workdir, "--folds=3", BATCH_OVERRIDE, f"--external={cohort}", "--class-map=TUM=tumor",
                 env=jax_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ROWS:
        tested = []
        for fold in range(3):
            results = json.loads((workdir / f"{name}_3fold" / f"fold_{fold}" / "results.json").read_text())
            assert (results["cv_fold"], results["cv_folds"]) == (fold, 3)
            assert f"{name} fold {fold} of 3: test accuracy" in proc.stdout
            tested += results["test_predictions"]["ids"]
        assert len(tested) == len(set(tested)) == 48  # the tiny specs' 6 classes x 8 tiles, each tested once
    assert "(fold 0 of 3-fold cross-validation)" in proc.stdout
    rows = {row["name"]: row for row in read_report_rows(workdir)}
    assert set(rows) == set(ROWS) | {f"{name}_3fold" for name in ROWS}  # the finished one-split rows stay rows
    assert all((rows[f"{name}_3fold"]["cv_folds_run"], rows[name]["cv_folds"]) == (3, None) for name in ROWS)
    # --external scores each cross-validated row once, as the ensemble of its folds' runs, in the row's folder
    assert sorted(p.relative_to(workdir).as_posix() for p in workdir.rglob("eval_external_*.json")) == [
        f"{name}_3fold/eval_external_cohort.json" for name in ROWS]
    lines = json.loads((workdir / "report.json").read_text())["external"]
    assert sorted((line["name"], line["ensemble_of"]) for line in lines) == [(f"{name}_3fold", 3) for name in ROWS]
    assert "| ensemble of 3 runs |" in (workdir / "report.md").read_text()
    refused = study(spec_files, workdir, "--folds=3", "--spec.data.cv_fold=1", env=jax_cache)
    assert refused.returncode != 0 and "leave --spec.data.cv_fold out" in refused.stderr.strip().splitlines()[-1]
    _check_the_folds_predict_together(workdir / "tiny_a_3fold", tmp_path)
    _check_the_folds_score_external_tiles_together(workdir / "tiny_a_3fold", cohort, tmp_path)


def _check_the_folds_score_external_tiles_together(row: Path, cohort: Path, out: Path) -> None:
    """The row's external result: its folds' mean class probabilities scored, each fold's own accuracy beside."""
    import shutil

    from flaxbench.errors import WorkdirError
    from flaxbench.external import evaluate_external

    together = json.loads((row / "eval_external_cohort.json").read_text())
    alone = [evaluate_external(row / f"fold_{k}", str(cohort), class_map="TUM=tumor", out=out / f"ext_{k}.json")[0]
             for k in range(3)]
    assert together["predictions"]["ids"] == alone[0]["predictions"]["ids"] and together["tiles"] == 8
    for tile, probs in enumerate(together["predictions"]["probabilities"]):
        mean = [sum(fold["predictions"]["probabilities"][tile][c] for fold in alone) / 3 for c in range(len(probs))]
        assert max(abs(a - b) for a, b in zip(probs, mean)) < 2e-6, tile
    members = together["members"]
    assert [(m["cv_fold"], m["accuracy"], m["loss"]) for m in members] == [
        (k, fold["accuracy"], pytest.approx(fold["loss"], abs=1e-6)) for k, fold in enumerate(alone)]
    accuracies = [fold["accuracy"] for fold in alone]
    assert together["member_accuracy_mean"] == pytest.approx(sum(accuracies) / 3)
    unfinished = shutil.copytree(row, out / "unfinished_3fold")
    (unfinished / "fold_1" / "results.json").unlink()  # a run stopped mid-way keeps its best checkpoint
    with pytest.raises(WorkdirError, match=r"fold_1' has not finished training \(no results.json\)"):
        evaluate_external(unfinished, str(cohort), class_map="TUM=tumor", out=out / "x.json")


def _check_the_folds_predict_together(row: Path, out: Path) -> None:
    """predict on a cross-validated row's folder averages its folds' class probabilities; evaluate names a fold."""
    from flaxbench.errors import WorkdirError
    from flaxbench.predict import predict_paths
    from flaxbench.train.evaluate import read_run_spec

    tiles = [str(SHARED_DATA / "kather2016_sample")]

    def probabilities(path: Path) -> dict[str, list[float]]:
        with path.open() as stream:
            return {line["path"]: [float(v) for k, v in line.items() if k.startswith("prob_")]
                    for line in csv.DictReader(stream)}

    together = probabilities(predict_paths(row, tiles, out / "row.csv"))
    alone = [probabilities(predict_paths(row / f"fold_{k}", tiles, out / f"fold_{k}.csv")) for k in range(3)]
    assert len(together) == 24
    for tile, probs in together.items():
        mean = [sum(fold[tile][c] for fold in alone) / 3 for c in range(len(probs))]
        assert max(abs(a - b) for a, b in zip(probs, mean)) < 2e-6, tile
    with pytest.raises(WorkdirError, match="holds the 3 runs of a cross-validated row .* e.g. '.*fold_0'"):
        read_run_spec(row)


def test_a_kept_ensemble_of_other_runs_is_named_for_deletion(tmp_path):
    from flaxbench.study import _external_options_differ

    row = tmp_path / "net_3fold"
    for run in ("fold_0", "fold_1", "fold_2", "fold_0/seed_1"):
        (row / run).mkdir(parents=True)
        (row / run / "spec.json").write_text("{}")
    path = row / "eval_external_cohort.json"
    asked = {"external": "/data/cohort", "class_map": {}, "center_crop": None}

    def differs(members: list[str]) -> str | None:
        record = {**asked, "members": [{"workdir": f"/elsewhere/net_3fold/{m}"} for m in members]}
        path.write_text(json.dumps(record))
        return _external_options_differ(path, "/data/cohort", dict.fromkeys(("class_map", "center_crop", "group_by")))

    assert differs(["fold_0", "fold_0/seed_1", "fold_1", "fold_2"]) is None  # the row moved: names still match
    assert "ensemble of other runs than the 4 in" in differs(["fold_0", "fold_1", "fold_2"])  # before seed 1
