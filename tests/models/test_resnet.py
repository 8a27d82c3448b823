"""ResNet port: torchvision parity (eval, train, head swap), conversion errors, min_size."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torchvision
from flax import nnx

from flaxbench.errors import FlaxbenchError, WeightsError
from flaxbench.weights import load_torchvision, to_numpy
from tests.models.torch_parity import (
    assert_close_to_scale,
    assert_eval_parity,
    assert_train_parity,
    compiled_logits,
    random_images,
    seeded_torch_model,
    torch_logits,
)

# Odd sides through every stride-2 conv and the max pool. Eager JAX compiles each op per input
# shape, so the tests below share this size and a batch of 2 wherever they can.
ODD_SIZE = 97


@pytest.fixture(scope="module", params=["resnet18", "resnet50"])
def study_model(request):
    """(arch, seeded torchvision model) for the ResNets the study uses."""
    return request.param, seeded_torch_model(getattr(torchvision.models, request.param))


def test_eval_logits_match_torchvision(study_model):
    arch, torch_model = study_model
    for size in (150, 224, ODD_SIZE):
        assert_eval_parity(arch, torch_model, size)


def test_train_logits_and_running_stats_match_torchvision(study_model):
    arch, torch_model = study_model
    assert_train_parity(arch, torch_model, ODD_SIZE, n=2)


def params_by_path(model: nnx.Module) -> dict[tuple[str, ...], np.ndarray]:
    """Every parameter of `model` by its attribute path."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {tuple(str(p) for p in path): np.asarray(var.get_value()) for path, var in flat}


def test_head_replacement_keeps_backbone(study_model):
    arch, torch_model = study_model
    full = load_torchvision(arch, torch_model.state_dict())
    small = load_torchvision(arch, torch_model.state_dict(), num_classes=6)
    # The shapes of the parity tests, so no new shapes to compile.
    assert small(jnp.asarray(random_images(2, ODD_SIZE)), train=False).shape == (2, 6)
    ours, theirs = params_by_path(small), params_by_path(full)
    assert ours.keys() == theirs.keys()
    head = tuple(str(p) for p in small.head_path)
    head_keys = {k for k in ours if k[: len(head)] == head}
    assert {ours[k].shape[-1] for k in head_keys} == {6}
    for key in ours.keys() - head_keys:
        np.testing.assert_array_equal(ours[key], theirs[key])


def test_missing_key_is_named(study_model):
    arch, torch_model = study_model
    state = to_numpy(torch_model.state_dict())
    del state["layer4.1.bn2.running_var"]
    with pytest.raises(WeightsError, match=re.escape("'layer4.1.bn2.running_var'")):
        load_torchvision(arch, state)


def test_unexpected_key_is_named(study_model):
    arch, torch_model = study_model
    state = to_numpy(torch_model.state_dict())
    state["layer2.0.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsError, match=re.escape("'layer2.0.extra.weight'")):
        load_torchvision(arch, state)


def test_state_dict_of_another_resnet_is_refused(study_model):
    arch, _ = study_model
    # resnet34's keys are a superset of resnet18's (unexpected 'layer1.2...'), and its
    # BasicBlock shapes differ from resnet50's Bottleneck (shape mismatch).
    state = torchvision.models.resnet34(weights=None).state_dict()
    with pytest.raises(WeightsError, match="another architecture"):
        load_torchvision(arch, state)


def test_alexnet_state_dict_is_refused():
    state = torchvision.models.alexnet(weights=None).state_dict()
    with pytest.raises(WeightsError, match="lacks key 'conv1.weight'"):
        load_torchvision("resnet18", state)


def test_min_size_is_the_smallest_input_torchvision_accepts():
    torch_model = seeded_torch_model(torchvision.models.resnet18)
    model = load_torchvision("resnet18", torch_model.state_dict())
    assert model.min_size == 1
    assert_eval_parity("resnet18", torch_model, model.min_size)
    with pytest.raises(FlaxbenchError, match="at least 1x1"):
        model(jnp.zeros((1, 0, 0, 3)), train=False)


@pytest.mark.parametrize("arch", ["resnet34", "resnet101", "resnet152"])
def test_other_depths_convert_and_match(arch):
    torch_model = seeded_torch_model(getattr(torchvision.models, arch))
    # Their layer shapes are those of resnet18 / resnet50 at ODD_SIZE: nothing new to compile.
    assert_eval_parity(arch, torch_model, ODD_SIZE)


def test_train_logits_match_torchvision_where_cpu_convolutions_take_winograd(monkeypatch):
    from flaxbench.models import convolution

    torch_model = seeded_torch_model(torchvision.models.resnet18)
    model = load_torchvision("resnet18", torch_model.state_dict())

    def convolutions():
        jaxpr = jax.make_jaxpr(lambda x: model(x, train=False))(jnp.zeros((16, 150, 150, 3)))
        return str(jaxpr).count("conv_general_dilated")

    # 16 tiles of 150 px take Winograd in layer1's four 38 x 38 convolutions (F(4x4, 3x3), 1600
    # tiles), layer2's three stride-1 19 x 19 ones (F(4x4, 3x3), 400 tiles) and layer3's three
    # 10 x 10 ones (F(5x5, 3x3), 64 tiles)
    winograd = convolutions()
    monkeypatch.setattr(convolution, "winograd_tiling", lambda *args: None)
    assert winograd == convolutions() - 10
    monkeypatch.undo()
    images = random_images(16, 150, seed=1)
    torch_model.train()
    expected = torch_logits(torch_model, images)
    assert_close_to_scale(compiled_logits(model, jnp.asarray(images), train=True), expected)
