"""The model registry: names, options and probability options checked before a model is built."""

import re

import pytest

from flaxbench.errors import SpecError
from flaxbench.models import build_model


@pytest.mark.parametrize("name, option", [
    ("convmodel", "dropout"), ("vit", "dropout"), ("vit", "attention_dropout"), ("alexnet", "dropout"),
    ("googlenet", "dropout"), ("densenet121", "drop_rate"), ("efficientnet_b0", "stochastic_depth_prob"),
])
@pytest.mark.parametrize("value", [1.5, -0.1, float("nan"), "0.2", 1.0])
def test_a_rate_that_is_not_a_drop_rate_names_its_option(name, option, value):
    if (option, value) == ("stochastic_depth_prob", 1.0):
        build_model(name, 6, **{option: value})  # rising over the blocks to 1: the last block alone dropped
        return
    with pytest.raises(SpecError, match=re.escape(f"spec.model.options.{option}={value!r} is not a drop rate")):
        build_model(name, 6, **{option: value})


def test_an_option_the_model_lacks_names_it():
    with pytest.raises(SpecError, match=re.escape("model 'resnet18' has no option 'dropout' (spec.model.options.dropout)")):
        build_model("resnet18", 6, dropout=0.1)


def test_an_unknown_model_lists_the_known_ones():
    with pytest.raises(SpecError, match="unknown model name 'resnet9000' in spec.model.name; known models: .*resnet18"):
        build_model("resnet9000", 6)


@pytest.mark.parametrize("name, option, value", [
    ("convmodel", "hidden", 0), ("convmodel", "hidden", -3), ("convmodel", "channels", (0, 8, 8)),
    ("convmodel", "channels", ()), ("convmodel", "channels", 8), ("vit", "depth", 0), ("vit", "num_heads", 0),
    ("vit", "patch_size", -15), ("vit", "mlp_dim", True),
])
def test_a_size_below_one_names_its_option(name, option, value):
    with pytest.raises(SpecError, match=re.escape(f"spec.model.options.{option}={value!r} must be")):
        build_model(name, 6, **{option: value})


def test_whole_number_rates_and_valid_sizes_build():
    model = build_model("convmodel", 6, image_size=32, channels=[4, 4, 4], hidden=1, dropout=0)
    assert model.fc2.out_features == 6
