"""DenseNet port: torchvision parity, old key names, memory_efficient, errors, min_size, variants."""

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
from flaxbench.models.densenet import DenseNet
from flaxbench.models.densenet_convert import load_torchvision_state
from flaxbench.weights import load_torchvision, to_numpy
from tests.models.torch_parity import (
    QUICK_COMPILE,
    assert_close_to_scale,
    assert_compiled_train_parity,
    assert_new_head_keeps_backbone,
    compiled_logits,
    params_by_path,
    random_images,
    seeded_torch_model,
    torch_logits,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")

# 97 -> conv0 49 -> pool0 25 -> transitions 12 (floor), 6, 3.
ODD_SIZE = 97


@pytest.fixture(scope="module")
def torch_model() -> torch.nn.Module:
    return seeded_torch_model(torchvision.models.densenet121)


@pytest.fixture(scope="module")
def model(torch_model) -> nnx.Module:
    return load_torchvision("densenet121", torch_model.state_dict())


def to_old_key_names(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Dense-layer keys as in torchvision's published .pth files: `norm1` -> `norm.1`, etc."""
    old = re.compile(r"(denselayer\d+\.(?:norm|conv))([12])\.")
    return {old.sub(r"\1.\2.", key): value for key, value in state.items()}


def test_eval_logits_match_torchvision(model, torch_model):
    for size in (ODD_SIZE, 150, 224):
        images = random_images(1, size)
        assert_close_to_scale(compiled_logits(model, jnp.asarray(images)), torch_logits(torch_model, images))
    # The parity above is only meaningful if the logits depend on the image.
    first, second = (torch_logits(torch_model, random_images(1, ODD_SIZE, seed=s)) for s in (0, 7))
    assert np.max(np.abs(first - second)) > 1e-2 * np.max(np.abs(first))


def test_train_logits_and_running_stats_match_torchvision(torch_model):
    assert_compiled_train_parity("densenet121", torch_model)


def test_published_old_key_names_are_renamed(model, torch_model):
    old_state = to_old_key_names(to_numpy(torch_model.state_dict()))
    assert "features.denseblock1.denselayer1.norm.1.weight" in old_state
    assert "features.denseblock4.denselayer16.conv.2.weight" in old_state
    ours, theirs = params_by_path(load_torchvision("densenet121", old_state)), params_by_path(model)
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key])


def test_old_and_new_names_for_one_tensor_are_refused(torch_model):
    state = to_numpy(torch_model.state_dict())
    new_key = "features.denseblock2.denselayer3.norm2.bias"
    state["features.denseblock2.denselayer3.norm.2.bias"] = state[new_key]
    with pytest.raises(WeightsError, match=re.escape(f"'{new_key}'")):
        load_torchvision("densenet121", state)


def tiny_densenet(memory_efficient: bool = False, drop_rate: float = 0.0) -> DenseNet:
    """A small DenseNet (the layer code of densenet121) with seeded torchvision weights."""
    torch.manual_seed(0)
    reference = torchvision.models.DenseNet(8, (2, 2), 16, num_classes=5)
    model = DenseNet(
        8, (2, 2), 16, drop_rate=drop_rate, num_classes=5, memory_efficient=memory_efficient,
        rngs=nnx.Rngs(params=0, dropout=1),
    )
    load_torchvision_state(model, to_numpy(reference.state_dict()))
    nnx.reseed(model, dropout=1)  # the dropout rng streams (drop_rate > 0) are state too
    return model


def train_step_outputs(model: DenseNet, images: jax.Array):
    """Train-mode logits, gradients of sum(logits**2), and updated batch statistics.

    Split into pure state as the training loop does, so nnx.remat runs under jax transforms.
    """
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)

    def loss(params, stats):
        # Fresh Variables at this trace level (as the training loop does), so BN can update them.
        m = nnx.merge(graphdef, *jax.tree.map(lambda x: x, (params, stats)))
        out = m(images, train=True)
        return jnp.sum(out**2), (out, nnx.state(m, nnx.BatchStat))

    run = jax.jit(jax.value_and_grad(loss, has_aux=True), compiler_options=QUICK_COMPILE)
    (_, (out, new_stats)), grads = run(params, stats)
    return out, grads, new_stats


def test_memory_efficient_gives_the_same_logits_gradients_and_statistics():
    images = jnp.asarray(random_images(2, 32, seed=2))
    plain = train_step_outputs(tiny_densenet(memory_efficient=False), images)
    efficient = train_step_outputs(tiny_densenet(memory_efficient=True), images)
    plain_out, plain_grads, plain_stats = plain
    efficient_out, efficient_grads, efficient_stats = efficient
    np.testing.assert_allclose(efficient_out, plain_out, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(efficient_grads), jax.tree.leaves(plain_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # The running statistics updated inside the recomputed bottleneck come out too.
    for a, b in zip(jax.tree.leaves(efficient_stats), jax.tree.leaves(plain_stats), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain_stats["features"]["norm0"]["mean"].get_value(), 0.0)


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_train_gradients_match_torchvision(memory_efficient):
    images = random_images(2, 32, seed=3)
    torch.manual_seed(0)
    reference = torchvision.models.DenseNet(8, (2, 2), 16, num_classes=5).train()
    torch_out = reference(torch.from_numpy(images).permute(0, 3, 1, 2))
    (torch_out**2).sum().backward()
    # torch's gradients loaded like weights, so the conversion maps names and layouts
    torch_grads = DenseNet(8, (2, 2), 16, num_classes=5, rngs=nnx.Rngs(0))
    load_torchvision_state(torch_grads, to_numpy(
        dict(reference.named_buffers()) | {name: param.grad for name, param in reference.named_parameters()}))

    out, grads, _ = train_step_outputs(tiny_densenet(memory_efficient), jnp.asarray(images))
    assert_close_to_scale(out, torch_out.detach().numpy())
    ours = {key: value for key, value in params_by_path(nnx.merge(nnx.graphdef(torch_grads), grads, nnx.state(
        torch_grads, nnx.BatchStat))).items() if key[-1] not in ("mean", "var")}
    theirs = {key: value for key, value in params_by_path(torch_grads).items() if key[-1] not in ("mean", "var")}
    assert ours.keys() == theirs.keys() and len(ours) > 20
    # Gradients that vanish in exact arithmetic (a BN scale whose output is renormalised by the
    # next BN) come out as float noise on both sides, so the tolerance is set by the largest one.
    scale = max(np.abs(g).max() for g in theirs.values())
    for key in ours:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-3, atol=1e-5 * scale, err_msg=str(key))


def test_memory_efficient_recomputes_the_bottleneck():
    def remats(model: DenseNet) -> int:
        graphdef, state = nnx.split(model)

        def loss(state, x):
            return jnp.sum(nnx.merge(graphdef, state)(x, train=True))

        jaxpr = str(jax.make_jaxpr(jax.grad(loss))(state, jnp.zeros((1, 32, 32, 3))))
        return len(re.findall(r"\b(?:remat\w*|checkpoint)\[", jaxpr))

    assert remats(tiny_densenet(False)) == 0
    assert remats(tiny_densenet(True)) > 0


def test_drop_rate_drops_features_in_train_mode_only():
    images = jnp.asarray(random_images(1, 32, seed=3))
    plain, dropping = tiny_densenet(), tiny_densenet(drop_rate=0.5)
    np.testing.assert_array_equal(compiled_logits(dropping, images), compiled_logits(plain, images))
    first = compiled_logits(dropping, images, train=True)
    second = compiled_logits(dropping, images, train=True)  # the rng stream advanced: a new mask
    assert not np.allclose(first, second)
    assert not np.allclose(first, compiled_logits(plain, images, train=True))


def test_head_replacement_keeps_backbone(model, torch_model):
    small = load_torchvision("densenet121", torch_model.state_dict(), num_classes=6)
    assert_new_head_keeps_backbone(small, model, "classifier", 1024, size=ODD_SIZE)


def test_missing_key_is_named(torch_model):
    state = to_numpy(torch_model.state_dict())
    del state["features.transition3.norm.running_mean"]
    with pytest.raises(WeightsError, match=re.escape("'features.transition3.norm.running_mean'")):
        load_torchvision("densenet121", state)


def test_unexpected_key_is_named(torch_model):
    state = to_numpy(torch_model.state_dict())
    extra = "features.denseblock4.denselayer17.conv1.weight"
    state[extra] = np.zeros((128, 1024, 1, 1), np.float32)
    with pytest.raises(WeightsError, match=re.escape(f"'{extra}'")):
        load_torchvision("densenet121", state)


def test_state_dict_of_another_architecture_is_refused():
    state = torchvision.models.resnet18(weights=None).state_dict()
    with pytest.raises(WeightsError, match="lacks key 'features.conv0.weight'"):
        load_torchvision("densenet121", state)


def test_min_size_is_the_smallest_input_torchvision_accepts(model, torch_model):
    assert model.min_size == 29
    out = nnx.eval_shape(lambda m, x: m(x, train=False), model, jnp.zeros((1, 29, 29, 3)))
    assert out.shape == (1, 1000)
    assert torch_logits(torch_model, random_images(1, 29)).shape == (1, 1000)
    with pytest.raises(RuntimeError):
        torch_logits(torch_model, random_images(1, 28))
    with pytest.raises(FlaxbenchError, match="at least 29x29"):
        model(jnp.zeros((1, 64, 28, 3)), train=False)


@pytest.mark.parametrize("arch", ["densenet161", "densenet169", "densenet201"])
def test_other_depths_convert(arch):
    torch.manual_seed(0)
    state = getattr(torchvision.models, arch)(weights=None).state_dict()
    model = load_torchvision(arch, state)
    features = {"densenet161": 2208, "densenet169": 1664, "densenet201": 1920}[arch]
    assert model.classifier.kernel.get_value().shape == (features, 1000)
    out = nnx.eval_shape(lambda m, x: m(x, train=False), model, jnp.zeros((1, 224, 224, 3)))
    assert out.shape == (1, 1000)


def test_unknown_option_is_a_spec_error():
    with pytest.raises(SpecError, match="'growth_rate'"):
        build_model("densenet121", 10, growth_rate=12)
