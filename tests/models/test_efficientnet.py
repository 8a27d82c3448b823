"""EfficientNet port: B4 torchvision parity (eval, train, head swap), conversion errors,
min_size, stochastic depth, and the structure of every variant B0-B7.

Speed: on CPU, JAX compiles each random initializer once per parameter shape (~40 s for B4)
and eager forwards compile each op per shape. So models here are built abstractly
(`nnx.eval_shape`, then every tensor comes from the state_dict) and forwards are jitted.
"""

from __future__ import annotations

import copy
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from flax import nnx

from flaxbench import weights
from flaxbench.errors import FlaxbenchError, SpecError, WeightsError
from flaxbench.models import build_model, efficientnet
from flaxbench.models.efficientnet_convert import load_torchvision_state
from flaxbench.models.layers import BatchNorm2d
from flaxbench.weights import load_torchvision, to_numpy
from tests.models.torch_parity import (
    assert_close_to_scale,
    params_by_path,
    random_images,
    seeded_torch_model,
    torch_logits,
)

STUDY_ARCH = "efficientnet_b4"
NO_RANDOMNESS = {"stochastic_depth_prob": 0.0, "dropout": 0.0}


@functools.cache
def _abstract_model(name: str, num_classes: int, options: tuple) -> nnx.Module:
    return nnx.eval_shape(lambda: build_model(name, num_classes, **dict(options)))


def _build_without_init(name: str, num_classes: int, *, seed: int = 0, **options) -> nnx.Module:
    """`build_model` minus the random init, for models whose every tensor is then loaded."""
    model = nnx.clone(_abstract_model(name, num_classes, tuple(sorted(options.items()))))
    nnx.reseed(model, dropout=seed + 1)  # RNG streams are the only state a state_dict lacks
    return model


@pytest.fixture(autouse=True)
def no_randomness(monkeypatch):
    """load_torchvision builds B4 without dropout / stochastic depth (it builds without a random init anyway)."""
    monkeypatch.setitem(weights.PRETRAINED_OPTIONS, STUDY_ARCH, NO_RANDOMNESS)


@pytest.fixture(scope="module")
def torch_b4() -> torch.nn.Module:
    """Seeded torchvision B4 without dropout / stochastic depth, so train mode is deterministic."""
    return seeded_torch_model(torchvision.models.efficientnet_b4, **NO_RANDOMNESS)


# Jitted forwards: one compile per input shape instead of one per op and shape.
eval_logits = nnx.jit(lambda model, images: model(images, train=False))
train_logits = nnx.jit(lambda model, images: model(images, train=True))


def test_eval_logits_match_torchvision(torch_b4):
    model = load_torchvision(STUDY_ARCH, torch_b4.state_dict())
    # 97: odd sides through every stride-2 conv (97 -> 49 -> 25 -> 13 -> 7 -> 4)
    for size, n in ((150, 1), (224, 1), (97, 2)):
        images = random_images(n, size)
        expected = torch_logits(torch_b4.eval(), images)
        assert_close_to_scale(np.asarray(eval_logits(model, jnp.asarray(images))), expected)


def _batch_stats(model: nnx.Module) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]


def test_train_logits_and_running_stats_match_torchvision(torch_b4):
    torch_model = copy.deepcopy(torch_b4)
    model = load_torchvision(STUDY_ARCH, torch_model.state_dict())
    images = random_images(2, 97, seed=1)
    expected = torch_logits(torch_model.train(), images)  # also updates torch's running stats
    assert_close_to_scale(np.asarray(train_logits(model, jnp.asarray(images))), expected)
    reference = load_torchvision(STUDY_ARCH, torch_model.state_dict())
    ours, theirs = _batch_stats(model), _batch_stats(reference)
    torch_norms = [m for m in torch_model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(ours) == len(theirs) == 2 * len(torch_norms)  # running mean and var of each
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_head_replacement_keeps_backbone(torch_b4):
    full = load_torchvision(STUDY_ARCH, torch_b4.state_dict())
    small = load_torchvision(STUDY_ARCH, torch_b4.state_dict(), num_classes=6)
    images = jax.ShapeDtypeStruct((2, 97, 97, 3), jnp.float32)
    assert nnx.eval_shape(lambda m, x: m(x), small, images).shape == (2, 6)
    head = tuple(str(p) for p in small.head_path)
    full_params, small_params = params_by_path(full), params_by_path(small)
    assert {k[len(head):] for k in small_params if k[: len(head)] == head} == {("kernel",), ("bias",)}
    assert small_params[(*head, "kernel")].shape == (1792, 6)
    backbone = [k for k in full_params if k[: len(head)] != head]
    assert len(backbone) == len(full_params) - 2
    for key in backbone:
        np.testing.assert_array_equal(full_params[key], small_params[key])


def test_missing_key_is_named(torch_b4):
    state = to_numpy(torch_b4.state_dict())
    del state["features.4.2.block.2.fc1.bias"]
    with pytest.raises(WeightsError, match=re.escape("'features.4.2.block.2.fc1.bias'")):
        load_torchvision(STUDY_ARCH, state)


def test_unexpected_key_is_named(torch_b4):
    state = to_numpy(torch_b4.state_dict())
    state["features.9.0.weight"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsError, match=re.escape("'features.9.0.weight'")):
        load_torchvision(STUDY_ARCH, state)


def test_state_dict_of_another_architecture_is_refused():
    resnet = torchvision.models.resnet18(weights=None).state_dict()
    with pytest.raises(WeightsError, match="lacks key 'features.0.0.weight'"):
        load_torchvision(STUDY_ARCH, resnet)
    with torch.device("meta"):
        b0 = torchvision.models.efficientnet_b0(weights=None)
    b0_state = {k: np.zeros(v.shape, np.float32) for k, v in b0.state_dict().items()}
    with pytest.raises(WeightsError, match="another architecture"):
        load_torchvision(STUDY_ARCH, b0_state)


def test_min_size_is_the_smallest_input_torchvision_accepts():
    # B0 has B4's strides and paddings: it checks the 1x1 case cheaply, and B0's parity with it.
    torch_b0 = seeded_torch_model(torchvision.models.efficientnet_b0)
    model = load_torchvision("efficientnet_b0", torch_b0.state_dict())
    assert model.min_size == 1
    images = random_images(1, model.min_size)
    assert_close_to_scale(np.asarray(eval_logits(model, jnp.asarray(images))), torch_logits(torch_b0, images))
    b4 = _build_without_init(STUDY_ARCH, 1000)  # the size check comes before any weight is used
    assert b4.min_size == 1
    with pytest.raises(FlaxbenchError, match="efficientnet_b4 needs images of at least 1x1"):
        b4(jnp.zeros((1, 0, 4, 3)), train=False)


def test_stochastic_depth_drops_whole_samples_in_training_only():
    layer = efficientnet.StochasticDepth(0.5, rngs=nnx.Rngs(dropout=0))
    x = jnp.ones((64, 2, 2, 3))
    np.testing.assert_array_equal(layer(x, train=False), x)
    out = np.asarray(layer(x, train=True)).reshape(64, -1)
    per_sample = out[:, :1]
    assert set(np.unique(out)) <= {0.0, 2.0}  # dropped, or kept and scaled by 1/(1-p)
    np.testing.assert_array_equal(out, np.broadcast_to(per_sample, out.shape))
    assert 0 < np.count_nonzero(per_sample) < 64


def test_mbconv_stochastic_depth_draws_from_the_dropout_stream():
    cnf = efficientnet.MBConvConfig(6, 3, 1, 8, 8, 1)  # stride 1, same channels: residual
    block = efficientnet.MBConv(cnf, 0.5, BatchNorm2d, rngs=nnx.Rngs(params=0, dropout=0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 4, 4, 8)), jnp.float32)
    nnx.reseed(block, dropout=1)
    first = np.asarray(train_logits(block, x))
    nnx.reseed(block, dropout=1)
    np.testing.assert_array_equal(train_logits(block, x), first)
    nnx.reseed(block, dropout=2)
    assert not np.array_equal(train_logits(block, x), first)
    dropped = [np.array_equal(first[i], x[i]) for i in range(16)]  # branch dropped: output is x
    assert 0 < sum(dropped) < 16
    np.testing.assert_array_equal(eval_logits(block, x), eval_logits(block, x))


@pytest.mark.parametrize("option", [{"dropout": 1.0}, {"stochastic_depth_prob": -0.1}])
def test_bad_probability_option_is_a_spec_error(option):
    name = next(iter(option))
    with pytest.raises(SpecError, match=f"efficientnet_b4 option {name}="):
        efficientnet.efficientnet_b4(rngs=nnx.Rngs(0), **option)


def _torch_structure(model: torch.nn.Module) -> dict[str, tuple]:
    """{module name: BN (eps, momentum) / stochastic-depth p / dropout p} of a torchvision model."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            out[name] = (m.eps, m.momentum)
        elif isinstance(m, (torchvision.ops.StochasticDepth, torch.nn.Dropout)):
            out[name] = (m.p,)
    return out


def _flax_structure(model: efficientnet.EfficientNet) -> dict[str, tuple]:
    """The same table for our model, its paths written as torch module names."""
    out = {}
    for path, m in nnx.iter_graph(model):
        name = ".".join(str(p) for p in path)
        if isinstance(m, BatchNorm2d):
            out[name] = (m.eps, m.momentum)
        elif isinstance(m, efficientnet.StochasticDepth):
            out[name] = (m.p,)
        elif isinstance(m, nnx.Dropout):
            out[name] = (m.rate,)
    return out


# Building B5/B6 abstractly takes ~10-15 s each; B7 (the largest) stays in the default run.
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "arch",
    [*(f"efficientnet_b{i}" for i in (0, 1, 2, 3, 4)), pytest.param("efficientnet_b5", marks=SLOW),
     pytest.param("efficientnet_b6", marks=SLOW), "efficientnet_b7"],
)
def test_variant_matches_torchvision_structure(arch):
    """Every variant builds, takes torchvision's state_dict (keys and shapes), has torchvision's
    BN eps/momentum, stochastic-depth probabilities and dropout by module name, and its shape."""
    with torch.device("meta"):  # shapes only: no memory, no init
        torch_model = getattr(torchvision.models, arch)(weights=None)
    model = _build_without_init(arch, 1000)
    assert _flax_structure(model) == _torch_structure(torch_model)
    zeros = {k: np.broadcast_to(np.float32(0), v.shape) for k, v in torch_model.state_dict().items()}
    load_torchvision_state(model, zeros)  # raises naming any key or shape that does not match
    images = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    assert nnx.eval_shape(lambda m, x: m(x), model, images).shape == (2, 1000)
