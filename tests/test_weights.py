"""torchvision weight files end to end: load, `convert`, `torchvision:`/`checkpoint:` inits, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from flaxbench.checkpoints import read_model_meta
from flaxbench.models import head_module
from flaxbench.train.setup import init_model
from flaxbench.weights import load_torchvision
from tests.helpers import REPO, run_cli, tiny_spec
from tests.models.torch_parity import assert_close_to_scale, random_images, seeded_torch_model, torch_logits

IMAGE_SIZE = 32

# A tiny synthetic resnet18 row for CLI training calls; the model and init come as overrides.
RESNET_SPEC = '''\
import runpy


def get_config():
    """specs/common.py with a tiny synthetic resnet18 run."""
    c = runpy.run_path({common!r})["get_config"]()
    c.name = "resnet18_init"
    c.data.source = "synthetic"
    c.data.synthetic_per_class = 8
    c.data.image_size = {size}
    c.data.split = (24, 12, 12)
    c.data.normalize = "imagenet"
    c.model.name = "resnet18"
    c.train.epochs = 1
    c.train.batch_size = 8
    c.train.eval_batch_size = 12
    c.mesh.data = 1
    return c
'''


def assert_one_line_error(proc, *needles: str) -> None:
    """Non-zero exit, no traceback, and stderr is one line holding every needle."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture(scope="module")
def torch_resnet18() -> torch.nn.Module:
    """A randomly initialised torchvision resnet18 (random BN statistics too), eval mode."""
    return seeded_torch_model(torchvision.models.resnet18)


@pytest.fixture(scope="module")
def weights_file(torch_resnet18, tmp_path_factory) -> Path:
    """The model's state_dict saved with torch.save."""
    path = tmp_path_factory.mktemp("torch") / "resnet18_random.pth"
    torch.save(torch_resnet18.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory) -> dict[str, str]:
    """Environment sharing one JAX compilation cache between this module's CLI calls.

    They all build resnet18 (and two train the same one), so only the first call compiles.
    """
    return {"JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


@pytest.fixture(scope="module")
def converted(weights_file, tmp_path_factory, jax_cache):
    """(output dir, process) of `flaxbench convert` on the weights file."""
    out = tmp_path_factory.mktemp("converted") / "resnet18"
    proc = run_cli("convert", "--arch=resnet18", f"--torch_weights={weights_file}", f"--out={out}", env=jax_cache)
    return out, proc


@pytest.fixture(scope="module")
def resnet_spec_file(tmp_path_factory) -> Path:
    """The tiny resnet18 spec file."""
    path = tmp_path_factory.mktemp("spec") / "resnet18_init.py"
    path.write_text(RESNET_SPEC.format(common=str(REPO / "specs" / "common.py"), size=IMAGE_SIZE))
    return path


def first_conv_kernel_of_torch(torch_model: torch.nn.Module) -> np.ndarray:
    """torch conv1 weight (O, I, kh, kw) as an NHWC kernel (kh, kw, I, O)."""
    return torch_model.conv1.weight.detach().numpy().transpose(2, 3, 1, 0)


def test_loaded_weights_give_torchs_eval_logits(torch_resnet18, weights_file):
    model = load_torchvision("resnet18", weights_file)
    images = random_images(2, IMAGE_SIZE)
    assert_close_to_scale(np.asarray(model(jnp.asarray(images), train=False)), torch_logits(torch_resnet18, images))


def test_convert_writes_a_model_checkpoint(converted, weights_file):
    out, proc = converted
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"checkpoint:{out}" in proc.stdout
    assert out.is_dir() and any(out.iterdir())
    meta = read_model_meta(out)
    assert (meta["arch"], meta["num_classes"], meta["source"]) == ("resnet18", 1000, str(weights_file))


@pytest.mark.parametrize("kind", ["torchvision", "checkpoint"])
def test_init_model_starts_from_the_torch_weights(kind, torch_resnet18, weights_file, converted):
    out, proc = converted
    assert proc.returncode == 0, proc.stderr[-3000:]
    init = f"torchvision:{weights_file}" if kind == "torchvision" else f"checkpoint:{out}"
    spec = tiny_spec(**{"model.name": "resnet18", "model.options": {}, "model.init": init,
                        "data.normalize": "imagenet"})
    model = init_model(spec, tuple("abcdef"), IMAGE_SIZE)
    np.testing.assert_array_equal(np.asarray(model.conv1.kernel[...]), first_conv_kernel_of_torch(torch_resnet18))
    np.testing.assert_array_equal(np.asarray(model.bn1.mean[...]), torch_resnet18.bn1.running_mean.numpy())
    layer4 = torch_resnet18.layer4[1].conv2.weight.detach().numpy().transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(np.asarray(model.layer4[1].conv2.kernel[...]), layer4)
    assert head_module(model).out_features == 6  # a fresh head for the spec's classes
    scratch = init_model(tiny_spec(**{"model.name": "resnet18", "model.options": {}}), tuple("abcdef"), IMAGE_SIZE)
    assert not np.allclose(np.asarray(scratch.conv1.kernel[...]), first_conv_kernel_of_torch(torch_resnet18))


def test_training_runs_from_converted_and_torchvision_weights(weights_file, converted, tmp_path):
    from flaxbench.train.loop import train_and_evaluate

    out, proc = converted
    assert proc.returncode == 0, proc.stderr[-3000:]
    for init in (f"checkpoint:{out}", f"torchvision:{weights_file}"):
        spec = tiny_spec(**{
            "model.name": "resnet18", "model.options": {}, "model.init": init, "data.normalize": "imagenet",
            "data.synthetic_per_class": 8, "data.image_size": IMAGE_SIZE, "data.split": (24, 12, 12),
            "train.epochs": 1, "train.eval_batch_size": 12,
        })
        workdir = tmp_path / init.split(":")[0]
        logged = []
        results = train_and_evaluate(spec, workdir, log=logged.append)
        assert any(line.startswith("epoch   1/1") for line in logged), logged
        assert (results["model"], results["init"], results["epochs"]) == ("resnet18", init, 1)
        assert json.loads((workdir / "results.json").read_text())["init"] == init
        assert len(results["classes"]) == 6


def convert(weights: Path | str, out: Path, arch: str = "resnet18", env: dict | None = None):
    """`flaxbench convert` of `weights` into `out` (with --torch_weights, the spelling absl accepts today)."""
    return run_cli("convert", f"--arch={arch}", f"--torch_weights={weights}", f"--out={out}", env=env)


def test_convert_accepts_the_documented_torch_weights_spelling(tmp_path):
    # The module docstring and convert's own error message spell the flag --torch-weights.
    missing = tmp_path / "nope.pth"
    proc = run_cli("convert", "--arch", "resnet18", "--torch-weights", str(missing), "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, str(missing), "does not exist")


def test_missing_weights_file(tmp_path):
    missing = tmp_path / "nope.pth"
    assert_one_line_error(convert(missing, tmp_path / "out"), str(missing), "does not exist")
    assert not (tmp_path / "out").exists()


def test_corrupt_weights_file(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_one_line_error(convert(corrupt, tmp_path / "out"), str(corrupt), "not a readable torch file")
    assert not (tmp_path / "out").exists()


def test_weights_file_that_is_not_a_state_dict(tmp_path):
    not_state = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_state)
    assert_one_line_error(convert(not_state, tmp_path / "out"), str(not_state), "state_dict")
    assert not (tmp_path / "out").exists()


def test_architecture_that_disagrees_with_the_state_dict(weights_file, tmp_path, jax_cache):
    proc = convert(weights_file, tmp_path / "out", arch="alexnet", env=jax_cache)
    assert_one_line_error(proc, "alexnet", "state_dict", str(weights_file))
    assert not (tmp_path / "out").exists()


def test_converted_checkpoint_of_another_architecture(resnet_spec_file, converted, jax_cache, tmp_path):
    out, _ = converted
    proc = run_cli(f"--spec={resnet_spec_file}", "--spec.model.name=alexnet", f"--spec.model.init=checkpoint:{out}",
                   f"--workdir={tmp_path / 'run'}", env=jax_cache)
    assert_one_line_error(proc, str(out), "resnet18", "alexnet")
    assert not (tmp_path / "run" / "results.json").exists()


def test_convert_refuses_a_non_empty_out_dir(weights_file, tmp_path, jax_cache):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine\n")
    assert_one_line_error(convert(weights_file, out, env=jax_cache), str(out), "not empty")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_whole_pickled_model_is_refused_saying_to_save_its_state_dict(torch_resnet18, tmp_path):
    pickled = tmp_path / "whole_model.pth"
    torch.save(torch_resnet18, pickled)
    assert_one_line_error(convert(pickled, tmp_path / "out"), str(pickled), "pickled", "model.state_dict()")
    assert not (tmp_path / "out").exists()


def test_a_data_parallel_state_dict_loads_without_its_module_prefix(torch_resnet18, tmp_path):
    wrapped = tmp_path / "data_parallel.pth"
    torch.save(torch.nn.DataParallel(torch_resnet18).state_dict(), wrapped)
    model = load_torchvision("resnet18", wrapped)
    np.testing.assert_array_equal(np.asarray(model.conv1.kernel[...]), first_conv_kernel_of_torch(torch_resnet18))


def test_a_torchvision_model_trained_for_other_classes_keeps_its_head(tmp_path, jax_cache):
    six_classes = seeded_torch_model(torchvision.models.resnet18, num_classes=6)
    path = tmp_path / "resnet18_six_classes.pth"
    torch.save(six_classes.state_dict(), path)
    images = random_images(2, IMAGE_SIZE)
    assert_close_to_scale(np.asarray(load_torchvision("resnet18", path)(jnp.asarray(images), train=False)),
                          torch_logits(six_classes, images))
    proc = convert(path, tmp_path / "out", env=jax_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_model_meta(tmp_path / "out")["num_classes"] == 6
    assert head_module(load_torchvision("resnet18", path, num_classes=3)).out_features == 3
