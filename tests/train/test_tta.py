"""Test-time augmentation: class probabilities averaged over each tile's 8 flips and rotations."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from data_pipeline import normalize
from flaxbench.train.evaluate import evaluate_workdir
from flaxbench.train.loop import train_and_evaluate
from flaxbench.train.state import split_model
from flaxbench.train.steps import make_predict
from tests.helpers import run_cli, tiny_spec


class Flat(nnx.Module):
    """Flatten, then one linear layer: sees every pixel where it is, so each view gives other logits."""

    def __init__(self):
        self.linear = nnx.Linear(5 * 5 * 3, 4, rngs=nnx.Rngs(0))

    def __call__(self, x, train=False):
        return self.linear(x.reshape(x.shape[0], -1))


def _log_softmax(x):
    return x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(-1, keepdims=True)


def test_tta_averages_the_probabilities_of_the_8_distinct_views():
    model = Flat()
    images = np.random.default_rng(0).integers(0, 256, (6, 5, 5, 3), dtype=np.uint8)
    predict = make_predict(split_model(model), normalize_mode="unit", compute_dtype=jnp.float32, mesh=None, tta=True)
    got = np.asarray(jax.jit(predict)(split_model(model).params, split_model(model).model_state, jnp.asarray(images),
                                      jnp.arange(6).reshape(2, 3)))
    views = [np.rot90(images, k, axes=(1, 2)) for k in range(4)]
    views += [v[:, :, ::-1] for v in views]
    assert len({v.tobytes() for v in views}) == 8
    probs = [np.exp(_log_softmax(np.asarray(model(normalize(jnp.asarray(v.copy()), "unit"))))) for v in views]
    np.testing.assert_allclose(np.exp(got), np.mean(probs, axis=0), rtol=1e-5, atol=1e-7)
    plain = make_predict(split_model(model), normalize_mode="unit", compute_dtype=jnp.float32, mesh=None)
    without = np.asarray(plain(split_model(model).params, split_model(model).model_state, jnp.asarray(images),
                               jnp.arange(6).reshape(2, 3)))
    assert not np.allclose(np.exp(_log_softmax(without)), np.exp(got), atol=1e-3)


def test_evaluate_and_predict_with_tta(tmp_path):
    workdir = tmp_path / "run"
    results = train_and_evaluate(tiny_spec(**{"train.epochs": 2}), workdir, log=lambda line: None)
    averaged = evaluate_workdir(workdir, "test", tta=True)
    assert averaged["tta"] is True and json.loads((workdir / "eval_test_tta.json").read_text()) == averaged
    assert averaged["predictions"]["ids"] == results["test_predictions"]["ids"]
    assert averaged["loss"] != pytest.approx(results["test_loss"])  # the views do change the outputs
    assert evaluate_workdir(workdir, "test")["loss"] == results["test_loss"]  # without --tta: as trained
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    from PIL import Image

    for k in range(3):
        Image.fromarray(np.random.default_rng(k).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tiles / f"{k}.png")
    proc = run_cli("predict", f"--workdir={workdir}", str(tiles), f"--out={tmp_path / 'p.csv'}", "--tta")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "8-view TTA" in proc.stdout and len((tmp_path / "p.csv").read_text().splitlines()) == 4
