"""`checkpoint:RUN` inits: fine-tuning from a flaxbench run's own checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flaxbench.checkpoints import BEST, LAST, RunCheckpoints, read_run_weights
from flaxbench.errors import WeightsError
from flaxbench.models import head_module
from flaxbench.train.setup import build_run, init_model
from flaxbench.train.state import flat_arrays, split_model
from tests.helpers import run_cli, tiny_spec

CLI_TINY = [
    "--spec=specs/demo.py", "--spec.data.synthetic_per_class=8", "--spec.data.image_size=16",
    "--spec.data.split=(24,12,12)", "--spec.train.epochs=1", "--spec.train.batch_size=8", "--spec.mesh.data=1",
]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> tuple[Path, tuple[str, ...]]:
    """(workdir, classes) of a finished tiny ConvModel run of two epochs."""
    from flaxbench.train.loop import train_and_evaluate

    workdir = tmp_path_factory.mktemp("source") / "run"
    results = train_and_evaluate(tiny_spec(**{"train.epochs": 2}), workdir, log=lambda line: None)
    return workdir, tuple(results["classes"])


def init_from(path: Path | str, classes, **overrides):
    """The tiny spec's model initialised with spec.model.init='checkpoint:PATH' for `classes`."""
    return init_model(tiny_spec(**{"model.init": f"checkpoint:{path}", **overrides}), classes, 32)


def arrays(model) -> dict[str, np.ndarray]:
    """Params and BN statistics of `model` by name."""
    parts = split_model(model)
    return {name: np.asarray(a) for tree in (parts.params, parts.model_state) for name, a in flat_arrays(tree).items()}


def saved_arrays(workdir: Path, which: str) -> dict[str, np.ndarray]:
    """The params and model state of the run's `which` checkpoint."""
    params, model_state, _ = read_run_weights(workdir / "checkpoints", which)
    return {name: np.asarray(a) for name, a in {**params, **model_state}.items()}


def test_read_run_weights_match_the_runs_own_restore(source_run):
    workdir, _ = source_run
    run = build_run(tiny_spec(**{"train.epochs": 2}), load_weights=False)
    ckpts = RunCheckpoints(workdir / "checkpoints", read_only=True)
    state, _, epoch = ckpts.restore(BEST, run.initial_state())
    ckpts.close()
    params, model_state, read_epoch = read_run_weights(workdir / "checkpoints", BEST)
    assert read_epoch == epoch
    for tree, read in ((state.params, params), (state.model_state, model_state)):
        expected = flat_arrays(tree)
        assert read.keys() == expected.keys()
        for name in expected:
            np.testing.assert_array_equal(np.asarray(read[name]), np.asarray(expected[name]), err_msg=name)


@pytest.mark.parametrize("suffix, which", [("", BEST), ("checkpoints", BEST), ("checkpoints/best", BEST),
                                           ("checkpoints/last", LAST)])
def test_a_run_init_starts_from_the_runs_checkpoint(source_run, suffix, which):
    workdir, classes = source_run
    got, saved = arrays(init_from(workdir / suffix, classes)), saved_arrays(workdir, which)
    assert got.keys() == saved.keys()
    for name in saved:
        np.testing.assert_array_equal(got[name], saved[name], err_msg=name)


def test_the_head_is_kept_only_for_the_same_classes_in_the_same_order(source_run):
    workdir, classes = source_run
    saved = saved_arrays(workdir, BEST)
    head = head_module(init_from(workdir, classes))
    reordered = init_from(workdir, classes[::-1])
    fewer = init_from(workdir, classes[:3])
    for model in (reordered, fewer):
        got = arrays(model)
        np.testing.assert_array_equal(got["conv1.kernel"], saved["conv1.kernel"])
        np.testing.assert_array_equal(got["fc1.kernel"], saved["fc1.kernel"])
        assert not np.array_equal(np.asarray(head_module(model).kernel[...]), np.asarray(head.kernel[...]))
    assert head_module(fewer).out_features == 3


def test_other_model_options_are_refused_naming_the_parameter(source_run):
    workdir, classes = source_run
    with pytest.raises(WeightsError, match=r"trained convmodel with hidden=32, this spec has 64; set "
                                           r"spec\.model\.options\.hidden=32"):
        init_from(workdir, classes, **{"model.options": dict(channels=(8, 16, 16), hidden=64, dropout=0.0)})
    with pytest.raises(WeightsError, match="trained 'convmodel', but spec.model.name is 'resnet18'"):
        init_from(workdir, classes, **{"model.name": "resnet18", "model.options": {}})


def test_googlenet_keeps_the_input_transform_its_run_trained_with(tmp_path):
    # Any non-scratch init turns GoogLeNet's transform_input on; a run trained from scratch had it off.
    run = tmp_path / "googlenet_scratch"
    (run / "checkpoints").mkdir(parents=True)
    (run / "spec.json").write_text(json.dumps({"model": {"name": "googlenet", "init": "scratch", "options": {}}}))
    (run / "data.json").write_text(json.dumps({"classes": ["a", "b"], "image_size": [64, 64]}))
    spec = tiny_spec(**{"model.name": "googlenet", "model.options": {}, "model.init": f"checkpoint:{run}"})
    with pytest.raises(WeightsError, match="transform_input=False"):
        init_model(spec, ("a", "b"), 64)


def test_fine_tune_from_a_run_on_the_command_line(tmp_path):
    source, tuned = tmp_path / "source", tmp_path / "tuned"
    assert run_cli(*CLI_TINY, f"--workdir={source}").returncode == 0
    proc = run_cli(*CLI_TINY, f"--spec.model.init=checkpoint:{source}", "--spec.seed=1", f"--workdir={tuned}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tuned / "results.json").read_text())["init"] == f"checkpoint:{source}"
    evaluated = run_cli("evaluate", f"--workdir={tuned}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    wrong_size = run_cli(*CLI_TINY, f"--spec.model.init=checkpoint:{source}", "--spec.data.image_size=24",
                         f"--workdir={tmp_path / 'bigger'}")
    assert wrong_size.returncode != 0 and "Traceback" not in wrong_size.stderr
    assert "16 px tiles" in wrong_size.stderr.strip().splitlines()[-1]


def test_a_vit_fine_tunes_on_tiles_of_another_size(tmp_path):
    from flaxbench.train.loop import train_and_evaluate

    vit = {"model.name": "vit", "model.options": dict(patch_size=5, depth=1, width=8, num_heads=2, mlp_dim=16),
           "data.normalize": "imagenet", "train.epochs": 1}
    source = tmp_path / "vit20"
    train_and_evaluate(tiny_spec(**vit, **{"data.image_size": 20}), source, log=lambda line: None)
    saved = saved_arrays(source, BEST)
    tuned = arrays(init_model(tiny_spec(**vit, **{"model.init": f"checkpoint:{source}"}), ("a", "b"), 30))
    assert tuned["pos_embedding"].shape == (1, 37, 8) and saved["pos_embedding"].shape == (1, 17, 8)
    np.testing.assert_array_equal(tuned["pos_embedding"][0, 0], saved["pos_embedding"][0, 0])  # class token
    for name in saved.keys() - {"pos_embedding", "head.kernel", "head.bias"}:
        np.testing.assert_array_equal(tuned[name], saved[name], err_msg=name)
    # Other heads: the weights fit by shape, but would be split into other heads; more dropout is fine-tuning's own.
    other_heads = {**vit, "model.options": {**vit["model.options"], "num_heads": 4}}
    with pytest.raises(WeightsError, match=r"trained vit with num_heads=2, this spec has 4; set "
                                           r"spec.model.options.num_heads=2"):
        init_model(tiny_spec(**other_heads, **{"model.init": f"checkpoint:{source}"}), ("a", "b"), 30)
    more_dropout = {**vit, "model.options": {**vit["model.options"], "dropout": 0.3}}
    init_model(tiny_spec(**more_dropout, **{"model.init": f"checkpoint:{source}"}), ("a", "b"), 30)


def test_a_run_cannot_start_from_itself(tmp_path):
    run = tmp_path / "run"
    assert run_cli(*CLI_TINY, f"--workdir={run}").returncode == 0
    before = (run / "results.json").read_bytes()
    for path in (run, run / "checkpoints" / "best"):
        proc = run_cli(*CLI_TINY, f"--spec.model.init=checkpoint:{path}", f"--workdir={run}", "--overwrite")
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert "another --workdir" in proc.stderr.strip().splitlines()[-1]
    assert (run / "results.json").read_bytes() == before
