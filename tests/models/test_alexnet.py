"""AlexNet port: torchvision parity (eval, train), dropout option, head swap, errors, min_size."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from flax import nnx

from flaxbench.errors import FlaxbenchError, SpecError, WeightsError
from flaxbench.models import build_model
from flaxbench.models.alexnet_convert import load_torchvision_state
from flaxbench.weights import load_torchvision, to_numpy
from tests.models.torch_parity import (
    assert_close_to_scale,
    params_by_path,
    random_images,
    seeded_torch_model,
    torch_logits,
)

# Building AlexNet's 57M random parameters is slow, so each model is built once here; and eager
# JAX compiles each op per input shape, so the tests share ODD_SIZE and a batch of 2.
ODD_SIZE = 97


@pytest.fixture(scope="module")
def torch_alexnet() -> torch.nn.Module:
    """Seeded torchvision AlexNet without dropout, so that train mode is deterministic."""
    return seeded_torch_model(torchvision.models.alexnet, dropout=0.0)


@pytest.fixture(scope="module")
def state(torch_alexnet) -> dict[str, np.ndarray]:
    """The torchvision state_dict as numpy arrays."""
    return to_numpy(torch_alexnet.state_dict())


@pytest.fixture(scope="module")
def converted(state) -> nnx.Module:
    """Our AlexNet without dropout, holding the torchvision weights."""
    model = build_model("alexnet", 1000, dropout=0.0)
    load_torchvision_state(model, state)
    return model


@pytest.fixture(scope="module")
def six_class(state) -> nnx.Module:
    """Loaded the way training does: default dropout 0.5 and a fresh 6-class head."""
    return load_torchvision("alexnet", state, num_classes=6)


def test_eval_logits_match_torchvision(torch_alexnet, converted):
    # 150 px leaves a 3x3 map that the adaptive pool must spread over 6x6; 97 px is odd.
    for size in (150, 224, ODD_SIZE):
        images = random_images(2, size)
        expected = torch_logits(torch_alexnet.eval(), images)
        assert_close_to_scale(np.asarray(converted(jnp.asarray(images), train=False)), expected)


def test_train_logits_match_torchvision_without_dropout(torch_alexnet, converted):
    images = random_images(2, ODD_SIZE, seed=1)
    expected = torch_logits(torch_alexnet.train(), images)
    torch_alexnet.eval()
    assert_close_to_scale(np.asarray(converted(jnp.asarray(images), train=True)), expected)


def test_head_replacement_keeps_backbone(converted, six_class):
    images = jnp.asarray(random_images(2, ODD_SIZE))
    assert six_class(images, train=False).shape == (2, 6)
    head = tuple(str(p) for p in six_class.head_path)

    ours, full = params_by_path(six_class), params_by_path(converted)
    assert ours.keys() == full.keys()
    head_keys = {k for k in ours if k[: len(head)] == head}
    assert {ours[k].shape[-1] for k in head_keys} == {6}
    for key in ours.keys() - head_keys:
        np.testing.assert_array_equal(ours[key], full[key])


def test_dropout_is_active_in_train_mode_and_follows_the_dropout_stream(six_class):
    images = jnp.asarray(random_images(2, ODD_SIZE))
    evaluated = six_class(images, train=False)
    np.testing.assert_array_equal(np.asarray(six_class(images, train=False)), np.asarray(evaluated))

    def train_logits(seed):
        nnx.reseed(six_class, dropout=jax.random.key(seed))
        return np.asarray(six_class(images, train=True))

    first = train_logits(0)
    assert not np.allclose(first, np.asarray(evaluated))
    np.testing.assert_array_equal(train_logits(0), first)
    assert not np.allclose(train_logits(1), first)


def test_bad_dropout_option_is_a_spec_error():
    with pytest.raises(SpecError, match=re.escape("dropout=1.5")):
        build_model("alexnet", 6, dropout=1.5)


# The error tests reuse `converted`: whatever they copy before failing is the same tensors.


def test_missing_key_is_named(converted, state):
    partial = {k: v for k, v in state.items() if k != "classifier.4.bias"}
    with pytest.raises(WeightsError, match=re.escape("'classifier.4.bias'")):
        load_torchvision_state(converted, partial)


def test_unexpected_key_is_named(converted, state):
    extended = {**state, "classifier.7.weight": np.zeros((6, 4096), np.float32)}
    with pytest.raises(WeightsError, match=re.escape("'classifier.7.weight'")):
        load_torchvision_state(converted, extended)


def test_resnet_state_dict_is_refused(converted):
    resnet = to_numpy(torchvision.models.resnet18(weights=None).state_dict())
    with pytest.raises(WeightsError, match=re.escape("'features.0.weight'")):
        load_torchvision_state(converted, resnet)


def test_min_size_is_the_smallest_input_torchvision_accepts(torch_alexnet, converted):
    assert converted.min_size == 63
    images = random_images(1, converted.min_size)
    expected = torch_logits(torch_alexnet.eval(), images)
    assert_close_to_scale(np.asarray(converted(jnp.asarray(images), train=False)), expected)
    too_small = random_images(1, converted.min_size - 1)
    with pytest.raises(RuntimeError):
        torch_logits(torch_alexnet, too_small)
    with pytest.raises(FlaxbenchError, match="at least 63x63"):
        converted(jnp.asarray(too_small), train=False)
