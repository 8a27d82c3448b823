"""spec.train.class_weights: torch's weighted cross-entropy on the training loss, checked before the tiles load."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from data_pipeline import normalize
from flaxbench.errors import SpecError
from flaxbench.train.class_weights import class_weights
from flaxbench.train.setup import build_run
from flaxbench.train.state import TrainState, split_model
from flaxbench.train.steps import make_train_step
from tests.helpers import tiny_spec


class Flat(nnx.Module):
    """Flatten, then one linear layer: logits the test can recompute in torch."""

    def __init__(self, classes: int):
        self.linear = nnx.Linear(4 * 4 * 3, classes, rngs=nnx.Rngs(0))

    def __call__(self, x, train=False):
        return self.linear(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_weighted_loss_is_torchs_weighted_cross_entropy(smoothing):
    model = Flat(3)
    images = np.random.default_rng(0).integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    labels = np.array([0, 0, 0, 1, 2, 2], np.int32)
    weights = np.array([0.5, 3.0, 1.25], np.float32)
    parts = split_model(model)
    tx = optax.sgd(0.0)
    step = make_train_step(parts, tx, augment_ops=(), normalize_mode="unit", compute_dtype=jnp.float32,
                           label_smoothing=smoothing, mesh=None, class_weights=weights)
    state = TrainState(parts.params, parts.model_state, tx.init(parts.params))
    _, loss, _ = jax.jit(step)(state, jnp.asarray(images), jnp.asarray(labels), jnp.arange(6), jax.random.key(0))
    logits = torch.tensor(np.asarray(model(normalize(jnp.asarray(images), "unit"))))
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor(labels).long(), weight=torch.tensor(weights),
                                                 label_smoothing=smoothing)
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)
    unweighted = torch.nn.functional.cross_entropy(logits, torch.tensor(labels).long(), label_smoothing=smoothing)
    assert abs(float(loss) - float(unweighted)) > 1e-3  # the weights matter on this batch


def test_balanced_weights_follow_the_training_split():
    weights = class_weights("balanced", np.array([0, 0, 0, 0, 0, 0, 1, 1, 2]), ("a", "b", "c"))
    np.testing.assert_allclose(weights, [9 / (3 * 6), 9 / (3 * 2), 9 / (3 * 1)])
    assert class_weights(None, np.array([0, 1]), ("a", "b")) is None
    with pytest.raises(SpecError, match="class 'c' has no training tiles"):
        class_weights("balanced", np.array([0, 1]), ("a", "b", "c"))
    with pytest.raises(SpecError, match="gives 2 weights for 3 classes .a, b, c."):
        class_weights((1.0, 2.0), np.array([0, 1, 2]), ("a", "b", "c"))


@pytest.mark.parametrize("setting, message", [
    ("balance", "must be None, 'balanced', or one positive number per class"),
    ((1.0, 0.0), "weight 0.0 must be a number above 0"),
    ((1.0, float("nan")), "weight nan must be a number above 0"),
    ((), "must be None, 'balanced'"),
])
def test_bad_settings_fail_before_the_tiles_load(setting, message, monkeypatch):
    import flaxbench.train.setup as setup

    monkeypatch.setattr(setup, "load_dataset", lambda cfg: pytest.fail("the tiles were loaded"))
    with pytest.raises(SpecError, match=message):
        build_run(tiny_spec(**{"train.class_weights": setting}), load_weights=False)


def test_a_weighted_run_records_its_weights(tmp_path):
    from flaxbench.train.loop import train_and_evaluate

    equal = train_and_evaluate(tiny_spec(**{"train.epochs": 1}), tmp_path / "plain", log=lambda line: None)
    scaled = train_and_evaluate(tiny_spec(**{"train.epochs": 1, "train.class_weights": (2.0,) * 6}),
                                tmp_path / "scaled", log=lambda line: None)
    assert equal["class_weights"] is None and scaled["class_weights"] == [2.0] * 6
    # Equal weights are no weights: the loss is divided by the sum of the weights.
    np.testing.assert_allclose([e["train_loss"] for e in scaled["history"]], [e["train_loss"] for e in equal["history"]],
                               rtol=1e-5)
    balanced = train_and_evaluate(tiny_spec(**{"train.epochs": 1, "train.class_weights": "balanced"}),
                                  tmp_path / "balanced", log=lambda line: None)
    assert len(balanced["class_weights"]) == len(balanced["classes"])
