"""GoogLeNet port: torchvision parity (eval, train, transform_input), aux keys, errors, min_size."""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from flax import nnx

from flaxbench import weights
from flaxbench.errors import FlaxbenchError, SpecError, WeightsError
from flaxbench.models import build_model
from flaxbench.models.googlenet_convert import load_torchvision_state
from flaxbench.weights import build_for_loading, load_torchvision, to_numpy
from tests.models.torch_parity import (
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

# Odd sides: 97 -> 49 -> 25 (ceil) -> 13 -> 7 -> 4 through the ceil_mode pools.
ODD_SIZE = 97


@pytest.fixture(scope="module", autouse=True)
def train_parity_options():
    """Pretrained GoogLeNet without dropout, so that train mode is deterministic."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(weights.PRETRAINED_OPTIONS, "googlenet", {"transform_input": True, "dropout": 0.0})
        yield


def googlenet_torch(transform_input: bool = True) -> torch.nn.Module:
    """Seeded torchvision GoogLeNet (no aux heads, no dropout) whose logits depend on the input.

    torchvision's own init (N(0, 0.01) weights) makes the logits all but constant in the input,
    so parity would not see the early layers; He-normal weights keep the signal alive.
    """
    model = seeded_torch_model(
        torchvision.models.googlenet, aux_logits=False, transform_input=transform_input,
        init_weights=True, dropout=0.0,
    )
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.weight.normal_(0.0, (2.0 / module.weight[0].numel()) ** 0.5, generator=gen)
    return model


@pytest.fixture(scope="module")
def torch_model() -> torch.nn.Module:
    return googlenet_torch()


@pytest.fixture(scope="module")
def model(torch_model) -> nnx.Module:
    return load_torchvision("googlenet", torch_model.state_dict())


def test_eval_logits_match_torchvision(model, torch_model):
    for size in (model.min_size, ODD_SIZE, 150, 224):
        images = random_images(1, size)
        expected = torch_logits(torch_model, images)
        assert_close_to_scale(compiled_logits(model, jnp.asarray(images)), expected)
    # The parity above is only meaningful if the logits depend on the image.
    first, second = (torch_logits(torch_model, random_images(1, ODD_SIZE, seed=s)) for s in (0, 7))
    assert np.max(np.abs(first - second)) > 1e-2 * np.max(np.abs(first))


def test_train_logits_and_running_stats_match_torchvision(torch_model):
    ours = assert_compiled_train_parity("googlenet", torch_model)
    assert sum(key[-1] in ("mean", "var") for key in ours) == 2 * 57  # every BasicConv2d's BN


def test_without_transform_input_matches_torchvision():
    torch_model = googlenet_torch(transform_input=False)
    model = build_for_loading("googlenet", 1000, transform_input=False)
    load_torchvision_state(model, to_numpy(torch_model.state_dict()))
    images = random_images(1, ODD_SIZE)
    assert_close_to_scale(compiled_logits(model, jnp.asarray(images)), torch_logits(torch_model, images))


def test_aux_head_keys_are_accepted_and_discarded(torch_model):
    state = to_numpy(torch_model.state_dict())
    torch.manual_seed(0)
    aux_model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
    aux_state = to_numpy(aux_model.state_dict())
    aux_keys = {k: v for k, v in aux_state.items() if k.startswith(("aux1.", "aux2."))}
    assert aux_keys  # torchvision's published weights carry these
    with_aux = load_torchvision("googlenet", {**state, **aux_keys})
    without_aux = load_torchvision("googlenet", state)
    ours, theirs = params_by_path(with_aux), params_by_path(without_aux)
    assert ours.keys() == theirs.keys()
    assert not any(path[0].startswith("aux") for path in ours)
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key])


def test_only_aux1_and_aux2_keys_are_discarded(torch_model):
    state = to_numpy(torch_model.state_dict())
    state["aux3.fc2.weight"] = np.zeros((1000, 1024), np.float32)
    with pytest.raises(WeightsError, match=re.escape("'aux3.fc2.weight'")):
        load_torchvision("googlenet", state)


def test_head_replacement_keeps_backbone(model, torch_model):
    small = load_torchvision("googlenet", torch_model.state_dict(), num_classes=6)
    assert_new_head_keeps_backbone(small, model, "fc", 1024, size=ODD_SIZE)


def test_missing_key_is_named(torch_model):
    state = to_numpy(torch_model.state_dict())
    del state["inception4e.branch4.1.bn.running_var"]
    with pytest.raises(WeightsError, match=re.escape("'inception4e.branch4.1.bn.running_var'")):
        load_torchvision("googlenet", state)


def test_unexpected_key_is_named(torch_model):
    state = to_numpy(torch_model.state_dict())
    state["inception3a.branch5.conv.weight"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsError, match=re.escape("'inception3a.branch5.conv.weight'")):
        load_torchvision("googlenet", state)


def test_state_dict_of_another_architecture_is_refused():
    state = torchvision.models.resnet18(weights=None).state_dict()
    with pytest.raises(WeightsError, match="lacks key 'conv1.conv.weight'"):
        load_torchvision("googlenet", state)


def test_min_size_is_the_smallest_input_torchvision_accepts(model, torch_model):
    # Eval parity at model.min_size runs in test_eval_logits_match_torchvision.
    too_small = model.min_size - 1
    with pytest.raises(RuntimeError):
        torch_logits(torch_model, random_images(1, too_small))
    with pytest.raises(FlaxbenchError, match="at least 15x15"):
        model(jnp.zeros((1, too_small, 64, 3)), train=False)


def test_unknown_option_is_a_spec_error():
    with pytest.raises(SpecError, match="'aux_logits'"):
        build_model("googlenet", 10, aux_logits=True)
