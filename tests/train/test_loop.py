"""The training loop end to end on tiny synthetic runs (CPU, seconds)."""

import json
import re
import shutil

import numpy as np
import pytest

from data_pipeline import DataError, load_dataset
from flaxbench.errors import SpecError, TrainingError, WorkdirError
from flaxbench.train.evaluate import evaluate_workdir
from flaxbench.train.loop import run_title, train_and_evaluate
from tests.data_pipeline.helpers import write_tiles
from tests.helpers import load_repo_spec, tiny_spec

REQUIRED_FIELDS = (
    "name", "model", "source", "classes", "test_accuracy", "test_loss", "val_accuracy", "train_time_s",
    "compile_time_s", "images_per_second", "accuracy_per_second", "loss_per_second", "params", "layers",
    "epochs", "seed", "device", "confusion_matrix", "per_class", "history", "evaluated_checkpoint",
    "test_predictions",
)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    results = train_and_evaluate(tiny_spec(**{"train.epochs": 6}), workdir, log=lambda s: None)
    return workdir, results


def test_results_json_holds_every_field(finished_run):
    workdir, results = finished_run
    saved = json.loads((workdir / "results.json").read_text())
    for field in REQUIRED_FIELDS:
        assert field in saved, field
    assert saved["synthetic"] is True and saved["source"] == "synthetic"
    assert 0.0 <= saved["test_accuracy"] <= 1.0
    assert saved["accuracy_per_second"] == pytest.approx(100 * saved["test_accuracy"] / saved["train_time_s"])
    assert saved["loss_per_second"] == pytest.approx(saved["test_loss"] / saved["train_time_s"])
    cm = np.array(saved["confusion_matrix"])
    assert cm.shape == (6, 6) and cm.sum() == len(saved["test_predictions"]["ids"]) == 24
    assert np.trace(cm) / cm.sum() == pytest.approx(saved["test_accuracy"])
    assert saved["layers"] == 5  # 3 conv + 2 dense
    assert len(saved["history"]) == 6
    assert saved["evaluated_checkpoint"]["which"] == "best_val"
    assert saved["evaluated_checkpoint"]["selected_by"] == "val_accuracy"  # spec.train.select_by=None
    assert all(0 <= h["val_balanced_accuracy"] <= 1 and 0 <= h["val_macro_f1"] <= 1 for h in saved["history"])
    best = max(saved["history"], key=lambda h: h["val_accuracy"])
    assert saved["val_accuracy"] == pytest.approx(best["val_accuracy"])
    assert (workdir / "spec.json").exists() and (workdir / "checkpoints" / "best").is_dir()
    # synthetic tiles are all distinct: none copied across or within the splits, and data.json says the same
    assert saved["duplicate_tiles"]["across_splits"] == {"val_in_train": 0, "test_in_train": 0, "test_in_val": 0}
    assert json.loads((workdir / "data.json").read_text())["duplicate_tiles"] == saved["duplicate_tiles"]
    assert any((workdir / "tensorboard").iterdir())
    import jax

    assert saved["versions"]["jax"] == jax.__version__ and saved["versions"]["python"].count(".") == 2


@pytest.mark.parametrize(("spec_file", "init", "title"), [
    ("resnet18", None, "ResNet18 (ImageNet)"),
    ("resnet18", "torchvision:/weights/resnet18-f37072fd.pth", "ResNet18 (ImageNet)"),
    ("resnet18", "scratch", "ResNet18 (from scratch)"),
    ("vit_p15", None, "ViT patch 15 (from scratch)"),
    ("convmodel", None, "ConvModel (3 conv + 2 FC)"),
])
def test_a_title_says_where_the_weights_started(spec_file, init, title):
    spec = load_repo_spec(spec_file)
    if init:
        spec.model.init = init
    assert run_title(spec) == title


def test_a_title_says_when_torchvision_weights_are_not_imagenets(tmp_path):
    import torch
    import torchvision

    from flaxbench.weights import load_torchvision

    spec = load_repo_spec("resnet18")
    path = tmp_path / "tuned_on_tiles.pth"
    state = torchvision.models.resnet18(num_classes=9).state_dict()
    torch.save({key: value.bfloat16() if value.is_floating_point() else value for key, value in state.items()}, path)
    spec.model.init = f"torchvision:{path}"
    assert run_title(spec) == "ResNet18 (weights of a 9-class model)"
    model = load_torchvision("resnet18", path)  # bfloat16 tensors widen to float32
    assert model.fc.kernel[...].shape == (512, 9)
    spec.model.init = f"torchvision:{tmp_path / 'gone.pth'}"  # a resumed run needs its initial weights no more
    assert run_title(spec) == "ResNet18 (ImageNet)"


def test_a_title_names_the_run_its_weights_came_from(finished_run):
    workdir, results = finished_run
    assert results["title"] == "tiny"  # no title: the name
    spec = tiny_spec(**{"title": "Tiny ({init})", "model.init": f"checkpoint:{workdir}/checkpoints/last"})
    assert run_title(spec) == f"Tiny (from run {workdir.name})"


def test_training_lowers_the_loss(finished_run):
    _, results = finished_run
    losses = [h["train_loss"] for h in results["history"]]
    assert losses[-1] < 0.95 * losses[0] and losses[-1] < np.log(6)  # below chance level


def test_evaluate_from_checkpoint_equals_results_exactly(finished_run):
    workdir, results = finished_run
    again = evaluate_workdir(workdir, "test")
    assert again["accuracy"] == results["test_accuracy"]
    assert again["loss"] == results["test_loss"]
    assert again["confusion_matrix"] == results["confusion_matrix"]
    assert again["predictions"] == results["test_predictions"]
    low, high = again["accuracy_ci"]  # with the report's CIs, of accuracy and of each class's values
    assert low <= again["accuracy"] <= high and again["ci_level"] == 0.95
    assert all(values["recall_ci"][0] <= values["recall"] <= values["recall_ci"][1]
               for values in again["per_class"].values() if values["recall_ci"] is not None)
    val = evaluate_workdir(workdir, "val")
    assert val["accuracy"] == results["val_accuracy"] and val["loss"] == results["val_loss"]
    assert again["temperature"] == results["temperature"] == val["temperature"]
    assert again["loss_temperature_scaled"] == results["test_loss_temperature_scaled"]
    assert again["ece_temperature_scaled"] == results["ece_temperature_scaled"]


def test_the_temperature_is_the_one_that_fits_the_validation_tiles_best(finished_run):
    workdir, results = finished_run
    val = evaluate_workdir(workdir, "val")  # its loss with the run's temperature, and at temperature 1
    assert results["temperature"] > 0 and val["loss_temperature_scaled"] <= val["loss"] + 1e-12
    # The checkpoint the temperature was not fitted to, and averaged flips, are not scaled with it.
    assert "temperature" not in evaluate_workdir(workdir, "val", which="last")
    assert "temperature" not in evaluate_workdir(workdir, "test", tta=True)


def test_evaluate_recovers_the_numbers_of_a_run_whose_results_json_is_damaged(finished_run, tmp_path, capsys):
    workdir, results = finished_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    (copy / "results.json").write_text('{"temperature": ')  # cut off mid-write, say
    again = evaluate_workdir(copy, "test")
    assert again["accuracy"] == results["test_accuracy"] and "temperature" not in again
    assert "results.json' is not a readable results.json" in capsys.readouterr().err


def test_relative_workdir_trains_and_evaluates_every_split(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = train_and_evaluate(tiny_spec(**{"train.epochs": 1}), "runs/relative", log=lambda s: None)
    assert (tmp_path / "runs" / "relative" / "results.json").is_file()
    assert evaluate_workdir("runs/relative", "test")["accuracy"] == results["test_accuracy"]
    train = evaluate_workdir("runs/relative", "train")
    assert sum(map(sum, train["confusion_matrix"])) == 48
    assert (tmp_path / "runs" / "relative" / "eval_train.json").is_file()


def test_finished_workdir_is_not_overwritten(finished_run):
    workdir, _ = finished_run
    before = (workdir / "results.json").read_bytes()
    with pytest.raises(WorkdirError, match="--overwrite"):
        train_and_evaluate(tiny_spec(**{"train.epochs": 6}), workdir, log=lambda s: None)
    assert (workdir / "results.json").read_bytes() == before


def test_overwrite_keeps_the_finished_run_until_the_new_one_loads(finished_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished_run[0], workdir)
    before = (workdir / "results.json").read_bytes()
    evaluate_workdir(workdir, "val")
    with pytest.raises(DataError, match="nowhere"):
        train_and_evaluate(tiny_spec(**{"data.source": f"folder:{tmp_path}/nowhere"}), workdir,
                           overwrite=True, log=lambda s: None)
    assert (workdir / "results.json").read_bytes() == before
    assert (workdir / "eval_val.json").is_file() and (workdir / "checkpoints").is_dir()
    # A torchvision port checks its minimum tile size only when built: still before anything is cleared.
    with pytest.raises(SpecError, match="alexnet needs tiles of at least 63 px, got 32"):
        train_and_evaluate(tiny_spec(**{"model.name": "alexnet", "model.options": {}}), workdir,
                           overwrite=True, log=lambda s: None)
    assert (workdir / "results.json").read_bytes() == before
    predicted = [workdir / "predictions.csv", workdir / "predictions_groups.csv", workdir / "predictions_maps"]
    for path in predicted[:2]:
        path.write_text("path,predicted_class\n")
    predicted[2].mkdir()
    (predicted[2] / "slide_1.png").write_bytes(b"")
    train_and_evaluate(tiny_spec(**{"train.epochs": 1}), workdir, overwrite=True, log=lambda s: None)
    assert json.loads((workdir / "results.json").read_text())["epochs"] == 1
    assert not (workdir / "eval_val.json").exists()  # it described the replaced run
    assert not any(path.exists() for path in predicted)  # predict's outputs of the replaced run


def test_a_run_resumes_from_tiles_read_from_a_new_folder_if_they_are_the_same(tmp_path):
    source = write_tiles(tmp_path / "job1", {"a": 8, "b": 8}, size=32)

    def spec(folder):
        return tiny_spec(**{"data.source": f"folder:{folder}", "data.classes": None, "data.split": (8, 4, 4),
                            "train.epochs": 2})

    workdir = tmp_path / "run"
    whole = train_and_evaluate(spec(source), workdir, log=lambda s: None)
    (workdir / "results.json").unlink()  # as if stopped before the results were written
    moved = source.rename(tmp_path / "job2")
    logged = []
    resumed = train_and_evaluate(spec(moved), workdir, log=logged.append)
    assert any(line.startswith("resuming") for line in logged), logged
    assert resumed["test_accuracy"] == whole["test_accuracy"] and resumed["source"] == f"folder:{moved}"
    (workdir / "results.json").unlink()
    tile = sorted((moved / "a").iterdir())[0]
    shutil.copy(tile, moved / "b" / f"extra{tile.suffix}")
    with pytest.raises(WorkdirError, match="the tiles or labels of a split"):
        train_and_evaluate(spec(moved), workdir, log=lambda s: None)


def test_a_run_stopped_before_its_first_checkpoint_starts_again_on_other_data(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    # What a run killed while compiling leaves: data.json of the data it loaded, no checkpoint.
    (workdir / "data.json").write_text(json.dumps({"classes": ["x", "y"], "split_sizes": {"train": 1}}))
    train_and_evaluate(tiny_spec(**{"train.epochs": 1}), workdir, log=lambda s: None)
    assert json.loads((workdir / "data.json").read_text())["classes"] != ["x", "y"]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    spec = tiny_spec(**{"train.learning_rate": 1e30, "train.epochs": 3, "train.optimizer": "sgd"})
    with pytest.raises(TrainingError, match=r"at step \d+ \(epoch \d+\)") as error:
        train_and_evaluate(spec, tmp_path, log=lambda s: None)
    assert not (tmp_path / "results.json").exists()
    epoch = int(re.search(r"\(epoch (\d+)\)", str(error.value)).group(1))
    kept = "no checkpoint was saved" if epoch == 1 else f"the last good checkpoint is epoch {epoch - 1} in"
    assert kept in str(error.value)


def test_bfloat16_compute_trains_with_float32_params(tmp_path):
    results = train_and_evaluate(tiny_spec(**{"train.dtype": "bfloat16", "train.epochs": 1}), tmp_path,
                                 log=lambda s: None)
    assert np.isfinite(results["test_loss"]) and results["dtype"] == "bfloat16"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_vit_trains_a_step(tmp_path, dtype):
    spec = tiny_spec(**{"model.name": "vit", "train.epochs": 1, "train.dtype": dtype})
    spec.model.options = dict(patch_size=8, depth=2, width=16, num_heads=2, mlp_dim=32, attention_dropout=0.1)
    results = train_and_evaluate(spec, tmp_path, log=lambda s: None)
    assert results["model"] == "vit" and np.isfinite(results["test_loss"]) and results["dtype"] == dtype


def last_params(spec, workdir) -> dict:
    """The parameters of the run in `workdir`'s last checkpoint, by flat name."""
    from flaxbench.checkpoints import LAST, RunCheckpoints
    from flaxbench.train.setup import build_run
    from flaxbench.train.state import flat_arrays

    template = build_run(spec).initial_state()
    return flat_arrays(RunCheckpoints(workdir / "checkpoints").restore(LAST, template)[0].params)


def test_the_scanned_epoch_trains_like_the_stepped_one(tmp_path):
    """'scan' (the default off CPU) and 'steps' (CPU's) take the same batches, keys and updates."""
    runs, params = {}, {}
    for loop in ("scan", "steps"):
        spec = tiny_spec(**{"train.epoch_loop": loop, "train.epochs": 2})
        spec.model.options.dropout = 0.3  # the steps' keys must match too
        runs[loop] = train_and_evaluate(spec, tmp_path / loop, log=lambda s: None)
        params[loop] = last_params(spec, tmp_path / loop)
    for field in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose([h[field] for h in runs["scan"]["history"]],
                                   [h[field] for h in runs["steps"]["history"]], rtol=1e-4, err_msg=field)
    scanned, stepped = runs["scan"]["test_predictions"], runs["steps"]["test_predictions"]
    np.testing.assert_allclose(scanned.pop("probabilities"), stepped.pop("probabilities"), atol=1e-4)
    assert scanned == stepped
    for name, value in params["steps"].items():
        np.testing.assert_allclose(np.asarray(params["scan"][name]), np.asarray(value), rtol=1e-3, atol=1e-5,
                                   err_msg=name)


def test_the_gpu_configuration_trains(tmp_path, other_backend):
    """bfloat16, one scanned epoch, and the models' plain forms with bernoulli dropout masks, as on a GPU."""
    other_backend()
    spec = tiny_spec(**{"model.name": "vit", "train.epochs": 2, "train.dtype": "bfloat16", "train.epoch_loop": "scan"})
    spec.model.options = dict(patch_size=8, depth=2, width=16, num_heads=2, mlp_dim=32, dropout=0.1,
                              attention_dropout=0.1)
    results = train_and_evaluate(spec, tmp_path, log=lambda s: None)
    assert results["dtype"] == "bfloat16" and len(results["history"]) == 2
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in results["history"])
    assert np.isfinite(results["test_loss"])


def test_dtype_auto_is_float32_on_cpu():
    from flaxbench.train.setup import build_run

    assert build_run(tiny_spec(**{"train.dtype": "auto"})).dtype_name == "float32"


def test_a_run_says_what_it_trains_on_and_how_long_loading_took(tmp_path):
    logged = []
    results = train_and_evaluate(tiny_spec(**{"train.epochs": 1}), tmp_path / "loaded", log=logged.append)
    assert logged[0].startswith("data: synthetic, 6 classes (tumor, stroma, complex, lympho, debris, mucosa), "
                                "48/24/24 tiles (train/val/test) of 32x32 px, loaded in ")
    assert results["data_load_time_s"] > 0 and logged[0].endswith(f"loaded in {results['data_load_time_s']:.1f} s")
    logged.clear()
    given = train_and_evaluate(tiny_spec(**{"train.epochs": 1}), tmp_path / "given", log=logged.append,
                               dataset=load_dataset(tiny_spec().data))  # as a study's rows share one load
    assert logged[0].endswith("of 32x32 px") and given["data_load_time_s"] is None


def test_a_warmup_as_long_as_the_run_is_warned_about(tmp_path, caplog):
    results = train_and_evaluate(tiny_spec(**{"train.epochs": 1, "train.warmup_epochs": 1.0}), tmp_path,
                                 log=lambda s: None)
    assert "spec.train.warmup_epochs=1 is not shorter than spec.train.epochs=1" in caplog.text
    assert results["epochs_trained"] == 1
    caplog.clear()
    train_and_evaluate(tiny_spec(**{"train.epochs": 2, "train.warmup_epochs": 1.0}), tmp_path / "shorter",
                       log=lambda s: None)
    assert "warmup_epochs" not in caplog.text


def test_an_eval_batch_larger_than_every_split_evaluates_as_the_largest_split(tmp_path):
    # tiny_spec's largest split holds 48 tiles; 10**12 would need terabytes of padding indices.
    results = [
        train_and_evaluate(tiny_spec(**{"train.epochs": 1, "train.eval_batch_size": size}), tmp_path / str(size),
                           log=lambda s: None)
        for size in (48, 10**12)
    ]
    for key in ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "test_predictions"):
        assert results[0][key] == results[1][key], key


def test_early_stopping_after_patience_epochs_without_a_better_one(tmp_path, monkeypatch):
    import flaxbench.train.loop as loop

    # Only the first epoch counts as better, so with a patience of 2 epochs 2 and 3 run and 4 does not.
    monkeypatch.setattr(loop, "_is_better", lambda entry, best, select_by: best is None)
    lines = []
    results = train_and_evaluate(tiny_spec(**{"train.epochs": 8, "train.early_stopping_patience": 2}), tmp_path,
                                 log=lines.append)
    assert results["epochs"] == 8 and results["epochs_trained"] == 3 and len(results["history"]) == 3
    assert results["evaluated_checkpoint"]["epoch"] == 1
    assert any("stopping early: validation has not improved for 2 epochs (best: epoch 1)" in line for line in lines)
    assert results["train_time_s"] == pytest.approx(sum(h["epoch_time_s"] for h in results["history"]))


@pytest.mark.parametrize("select_by, best", [
    ("val_loss", lambda h: min(h, key=lambda e: e["val_loss"])),
    ("val_balanced_accuracy", lambda h: max(h, key=lambda e: (e["val_balanced_accuracy"], -e["val_loss"]))),
])
def test_the_tested_epoch_is_the_best_by_select_by(tmp_path, select_by, best):
    results = train_and_evaluate(tiny_spec(**{"train.epochs": 4, "train.select_by": select_by}), tmp_path,
                                 log=lambda line: None)
    assert results["evaluated_checkpoint"]["selected_by"] == select_by
    assert results["evaluated_checkpoint"]["epoch"] == best(results["history"])["epoch"]
    assert results["val_loss"] == pytest.approx(best(results["history"])["val_loss"])
