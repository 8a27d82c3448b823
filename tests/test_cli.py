"""The command line: one-line errors, exit codes, nothing overwritten."""

import json
import shutil

import pytest

from tests.helpers import REPO, SHARED_DATA, run_cli, unwritable

TINY = [
    "--spec=specs/demo.py", "--spec.data.synthetic_per_class=8", "--spec.data.image_size=16",
    "--spec.data.split=(24,12,12)", "--spec.train.epochs=1", "--spec.train.warmup_epochs=0",
    "--spec.train.batch_size=8", "--spec.mesh.data=1",
]


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    for needle in needles:
        assert needle in last, last


def test_missing_spec_file():
    assert_one_line_error(run_cli("--spec=specs/nope.py"), "nope.py")


def test_misspelled_spec_key_names_it():
    proc = run_cli("--spec=specs/demo.py", "--spec.trian.epochs=1")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "trian" in proc.stderr


def test_unknown_model_name(tmp_path):
    proc = run_cli(*TINY, "--spec.model.name=resnet9000", f"--workdir={tmp_path}")
    assert_one_line_error(proc, "resnet9000", "spec.model.name")


def test_missing_folder_source(tmp_path):
    proc = run_cli(*TINY, f"--spec.data.source=folder:{tmp_path}/none", f"--workdir={tmp_path}/run")
    assert_one_line_error(proc, f"{tmp_path}/none")
    assert not (tmp_path / "run").exists()  # no empty run directory left behind


def test_train_then_refuse_to_overwrite_then_evaluate(tmp_path):
    run = tmp_path / "run"
    first = run_cli(*TINY, f"--workdir={run}")
    assert first.returncode == 0, first.stderr
    assert "epoch   1/1" in first.stdout
    before = (run / "results.json").read_bytes()
    again = run_cli(*TINY, f"--workdir={run}")
    assert_one_line_error(again, "--overwrite")
    assert (run / "results.json").read_bytes() == before
    ev = run_cli("evaluate", f"--workdir={run}", "--split=val")
    assert ev.returncode == 0, ev.stderr
    assert "[val] [SYNTHETIC DATA] accuracy" in ev.stdout and (run / "eval_val.json").exists()
    best = (run / "eval_val.json").read_bytes()
    last = run_cli("evaluate", f"--workdir={run}", "--split=val", "--checkpoint=last")
    assert last.returncode == 0, last.stderr
    assert (run / "eval_val_last.json").exists() and (run / "eval_val.json").read_bytes() == best
    in_fives = run_cli("evaluate", f"--workdir={run}", "--split=val", "--batch-size=5")
    assert in_fives.returncode == 0, in_fives.stderr
    before, after = json.loads(best), json.loads((run / "eval_val.json").read_text())
    assert after["confusion_matrix"] == before["confusion_matrix"] and abs(after["loss"] - before["loss"]) < 1e-5
    assert_one_line_error(run_cli("evaluate", f"--workdir={run}", "--batch-size=0"), "--batch-size must be at least 1")
    for spec_arguments in (["--spec=specs/demo.py", "--spec.data.image_size=64"], ["--spec.data.image_size", "64"]):
        ignored = run_cli("evaluate", f"--workdir={run}", *spec_arguments)
        assert_one_line_error(ignored, "evaluate does not take --spec")


@pytest.mark.parametrize("arguments, needles", [
    ([*TINY, "--seeds=3"], ["train does not take --seeds", "study"]),  # forgot `study`: one seed only
    (["study", "--overwrite"], ["study does not take --overwrite", "delete a row's directory"]),
    (["study", "--spec=specs/resnet18.py"], ["study does not take --spec", "--specs"]),
    (["predict", "--split=val", "tile.png"], ["predict does not take --split", "evaluate"]),
    (["report", "runs", "--torch-weights=a.pth"], ["report does not take --torch-weights", "convert"]),
    (["study", "--batch-size=8"], ["study does not take --batch-size", "evaluate, predict"]),
    (["evaluate", "--workdir=runs/x", "--temperature-scaled"], ["evaluate does not take --temperature-scaled",
                                                                "predict"]),
    (["evaluate", "--external=tiles", "--tfds-data-dir=tfds"], ["evaluate --external reads the tiles at its PATH",
                                                               "does not take --tfds-data-dir"]),
])
def test_a_flag_the_command_would_ignore_is_refused(tmp_path, arguments, needles):
    out = tmp_path / "run"
    proc = run_cli(*arguments, f"--out={out}" if arguments[0] == "report" else f"--workdir={out}")
    assert_one_line_error(proc, *needles)
    assert list(tmp_path.iterdir()) == []  # nothing trained or written


def test_a_run_prints_no_library_info_lines_unless_asked(tmp_path):
    # JAX_PLATFORMS unset, as for a user: JAX then logs at INFO that it found no TPU.
    quiet = run_cli(*TINY, f"--workdir={tmp_path / 'run'}", env={"JAX_PLATFORMS": ""})
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.strip() == "", quiet.stderr
    verbose = run_cli("evaluate", f"--workdir={tmp_path / 'run'}", "-v", "0", env={"JAX_PLATFORMS": ""})
    assert verbose.returncode == 0, verbose.stderr
    assert "orbax-checkpoint version" in verbose.stderr


def test_running_out_of_memory_is_one_line_with_what_to_lower(tmp_path):
    # A 4 TB hidden layer: XLA's allocation fails at once with RESOURCE_EXHAUSTED.
    proc = run_cli(*TINY, "--spec.model.options.hidden=1000000000000", f"--workdir={tmp_path / 'run'}")
    assert proc.returncode == 2
    assert_one_line_error(proc, "out of memory", "RESOURCE_EXHAUSTED", "spec.train.batch_size")
    assert not (tmp_path / "run").exists()


def test_overrides_take_a_value_after_an_equals_sign_or_a_space():
    from flaxbench.__main__ import check_spec_arguments

    argv = ["flaxbench", "--spec", "specs/demo.py", "--spec.train.epochs", "3", "--spec.mesh.data", "-1",
            "--spec.train.deterministic", "--spec.data.classes=None", "--workdir", "runs/x"]
    assert check_spec_arguments(argv) == {
        "train.epochs": 3, "mesh.data": -1, "train.deterministic": True, "data.classes": None}


def test_none_overrides_and_a_relative_workdir(tmp_path):
    # Every class folder at the tiles' own size: both keys set to None from the command line,
    # and two overrides in the space-separated form.
    proc = run_cli(f"--spec={REPO / 'specs' / 'convmodel.py'}",
                   f"--spec.data.source=folder:{SHARED_DATA / 'kather2016_sample'}", "--spec.data.classes=None",
                   "--spec.data.image_size=None", "--spec.data.split=(8,8,8)", "--spec.train.epochs", "1",
                   "--spec.train.batch_size", "8", "--spec.mesh.data=1", "--workdir=runs/all", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "runs" / "all" / "data.json").read_text())
    assert len(data["classes"]) == 8 and data["image_size"] == [150, 150]
    assert (tmp_path / "runs" / "all" / "results.json").is_file()


def test_keys_a_spec_file_sets_to_plain_none_or_to_whole_numbers_take_overrides(tmp_path):
    spec = tmp_path / "mine.py"
    spec.write_text(f"""import runpy


def get_config():
    c = runpy.run_path({str(REPO / 'specs' / 'demo.py')!r})["get_config"]()
    with c.unlocked():
        del c.data["image_size"]
    c.data.image_size = None  # untyped, as a spec written from scratch has it
    c.train.warmup_epochs = 0  # a whole number where specs/common.py has a float
    return c
""")
    proc = run_cli(f"--spec={spec}", *TINY[1:], "--spec.train.warmup_epochs=0.5", f"--workdir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert saved["data"]["image_size"] == 16 and saved["train"]["warmup_epochs"] == 0.5


def test_a_runs_spec_json_runs_it_again_to_the_same_numbers(tmp_path):
    first = run_cli(*TINY, "--spec.data.augment=('hflip',)", f"--workdir={tmp_path / 'first'}")
    assert first.returncode == 0, first.stderr
    again = run_cli(f"--spec={tmp_path / 'first' / 'spec.json'}", f"--workdir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "spec.json").read_text() == (tmp_path / "first" / "spec.json").read_text()
    results = [json.loads((tmp_path / run / "results.json").read_text()) for run in ("first", "again")]
    assert results[0]["test_predictions"] == results[1]["test_predictions"]
    assert_one_line_error(run_cli(f"--spec={tmp_path / 'first' / 'data.json'}"), "has key 'classes'")


def test_a_run_folder_that_cannot_be_written_is_one_line_naming_where_to_write(tmp_path):
    run = tmp_path / "run"
    assert run_cli(*TINY, f"--workdir={run}").returncode == 0
    with unwritable(run):
        evaluated = run_cli("evaluate", f"--workdir={run}")
        reported = run_cli("report", str(run))
        elsewhere = run_cli("report", str(run), f"--out={tmp_path / 'report'}")
    assert_one_line_error(evaluated, str(run / "eval_test.json"), "copy the run somewhere writable")
    assert_one_line_error(reported, str(run), "give --out a writable folder")
    assert elsewhere.returncode == 0, elsewhere.stderr


def test_evaluate_takes_the_new_place_of_tiles_that_moved(tmp_path):
    tiles = SHARED_DATA / "kather2016_sample"
    if not tiles.is_dir():
        pytest.skip(f"sample tiles not found at {tiles}")
    copy = tmp_path / "tiles"
    shutil.copytree(tiles, copy)
    run = tmp_path / "run"
    trained = run_cli(*TINY, f"--spec.data.source=folder:{copy}", "--spec.data.classes=None",
                      "--spec.data.split=(8,8,8)", f"--workdir={run}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    moved = copy.rename(tmp_path / "moved")
    assert_one_line_error(run_cli("evaluate", f"--workdir={run}"), str(copy), "--source=folder:")
    again = run_cli("evaluate", f"--workdir={run}", f"--source=folder:{moved}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run / "eval_test.json").read_text())["accuracy"] == json.loads(
        (run / "results.json").read_text())["test_accuracy"]


def test_a_folder_with_its_own_split_trains_on_it_and_evaluates(tmp_path):
    from tests.data_pipeline.helpers import write_tiles

    write_tiles(tmp_path / "tiles" / "train", {"a": 8, "b": 8}, size=16)
    write_tiles(tmp_path / "tiles" / "test", {"a": 4, "b": 4}, size=16)
    source = [f"--spec.data.source=folder:{tmp_path / 'tiles'}", "--spec.data.classes=None"]
    refused = run_cli(*TINY, *source, f"--workdir={tmp_path / 'run'}")
    assert_one_line_error(refused, "holds split folders (test, train)", "spec.data.split=\"('train', 0.15, 'test')\"")
    proc = run_cli(*TINY, *source, "--spec.data.split=('train', 0.25, 'test')", f"--workdir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["split_sizes"] == {"train": 12, "val": 4, "test": 8}
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert sorted(results["test_predictions"]["ids"]) == sorted(
        f"test/{c}/tile_{k}.png" for c in "ab" for k in range(4))
    assert run_cli("evaluate", f"--workdir={tmp_path / 'run'}").returncode == 0


def test_a_split_by_patient_is_recorded_and_reported(tmp_path):
    run = tmp_path / "run"
    proc = run_cli(*TINY, f"--spec.data.source=folder:{SHARED_DATA / 'kather2016_sample'}",
                   "--spec.data.classes=('tumor','stroma','complex')", "--spec.data.split=(0.5,0.25,0.25)",
                   r"--spec.data.group_by=CRC-Prim-HE-\d+", "--spec.train.batch_size=3", f"--workdir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    groups = json.loads((run / "data.json").read_text())["split_groups"]
    assert sorted(sum(groups.values(), [])) == sorted(set(sum(groups.values(), [])))  # no patient in two splits
    assert all(name.startswith("CRC-Prim-HE-") for name in sum(groups.values(), []))
    results = json.loads((run / "results.json").read_text())
    assert results["group_by"] == r"CRC-Prim-HE-\d+"
    assert results["groups_per_split"] == {k: len(v) for k, v in groups.items()}
    report = run_cli("report", str(run))
    assert report.returncode == 0, report.stderr
    assert r"whole groups by `CRC-Prim-HE-\d+`" in (run / "report.md").read_text()
