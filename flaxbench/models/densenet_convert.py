"""torchvision DenseNet state_dict -> flaxbench DenseNet, key by key.

torchvision's published DenseNet .pth files predate its current layer names: a dense layer's
tensors are stored as `...denselayerN.norm.1.weight`, `conv.1`, `norm.2`, `conv.2` instead of
`norm1`, `conv1`, `norm2`, `conv2`. torchvision renames them with a regex when it loads its own
weights (`_load_state_dict` in torchvision/models/densenet.py); `with_current_key_names` does the
same renaming here, so both the published files and today's `model.state_dict()` load.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from flaxbench.errors import WeightsError
from flaxbench.models.densenet import DenseNet, _DenseLayer
from flaxbench.models.torch_convert import StateDictMapper

# The classifier's Linear, whose rows are the classes (1000 in the ImageNet weights).
TORCH_HEAD = "classifier"

# "<...>denselayer7.norm.1.running_var" -> groups "<...>denselayer7.norm", "1.running_var".
OLD_DENSE_LAYER_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def with_current_key_names(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`state_dict` with old dense-layer keys (`norm.1`, `conv.2`, ...) renamed to `norm1`, `conv2`."""
    renamed: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        match = OLD_DENSE_LAYER_KEY.match(key)
        new_key = match.group(1) + match.group(2) if match else key
        if new_key in renamed:
            raise WeightsError(
                f"state_dict has both old- and new-style names for '{new_key}' (e.g. '{key}'): "
                "save it again from one torchvision DenseNet"
            )
        renamed[new_key] = value
    return renamed


def _dense_layer(mapper: StateDictMapper, layer: _DenseLayer, prefix: str) -> None:
    mapper.bn(layer.norm1, f"{prefix}.norm1")
    mapper.conv(layer.conv1, f"{prefix}.conv1")
    mapper.bn(layer.norm2, f"{prefix}.norm2")
    mapper.conv(layer.conv2, f"{prefix}.conv2")


def load_torchvision_state(model: DenseNet, state_dict: Mapping[str, np.ndarray]) -> None:
    """Copy a torchvision DenseNet state_dict (old or current key names) into `model`."""
    mapper = StateDictMapper(with_current_key_names(state_dict), model.arch)
    features = model.features
    mapper.conv(features["conv0"], "features.conv0")
    mapper.bn(features["norm0"], "features.norm0")
    for i in range(1, model.num_blocks + 1):
        block = features[f"denseblock{i}"]
        for j, layer in enumerate(block.layers(), start=1):
            _dense_layer(mapper, layer, f"features.denseblock{i}.denselayer{j}")
        if i != model.num_blocks:
            transition = features[f"transition{i}"]
            mapper.bn(transition.norm, f"features.transition{i}.norm")
            mapper.conv(transition.conv, f"features.transition{i}.conv")
    mapper.bn(features["norm5"], "features.norm5")
    mapper.linear(model.classifier, TORCH_HEAD)
    mapper.finish()
