"""torchvision EfficientNet B0-B7 state_dict -> `flaxbench.models.efficientnet.EfficientNet`.

torchvision keys: `features.0.{0,1}` (stem conv, BN), `features.{stage}.{block}.block.{i}`
(each MBConv layer: `.0` conv / `.1` BN, or `.fc1` / `.fc2` for squeeze-excitation),
`features.{last}.{0,1}` (last 1x1 conv, BN), `classifier.1` (Linear).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flaxbench.models.efficientnet import Conv2dNormActivation, EfficientNet, MBConv, SqueezeExcitation
from flaxbench.models.torch_convert import StateDictMapper

# The classifier's Linear, whose rows are the classes (1000 in the ImageNet weights).
TORCH_HEAD = "classifier.1"


def _conv_norm(mapper: StateDictMapper, layer: Conv2dNormActivation, prefix: str) -> None:
    mapper.conv(layer[0], f"{prefix}.0")
    mapper.bn(layer[1], f"{prefix}.1")


def _mbconv(mapper: StateDictMapper, block: MBConv, prefix: str) -> None:
    for i, layer in enumerate(block.block):
        if isinstance(layer, SqueezeExcitation):
            mapper.conv(layer.fc1, f"{prefix}.block.{i}.fc1")
            mapper.conv(layer.fc2, f"{prefix}.block.{i}.fc2")
        else:
            _conv_norm(mapper, layer, f"{prefix}.block.{i}")


def load_torchvision_state(model: EfficientNet, state_dict: Mapping[str, np.ndarray]) -> None:
    """Copy a torchvision EfficientNet state_dict into `model` in place, checking every key."""
    mapper = StateDictMapper(state_dict, model.arch)
    last = len(model.features) - 1
    _conv_norm(mapper, model.features[0], "features.0")
    for stage_index in range(1, last):
        for block_index, block in enumerate(model.features[stage_index]):
            _mbconv(mapper, block, f"features.{stage_index}.{block_index}")
    _conv_norm(mapper, model.features[last], f"features.{last}")
    mapper.linear(model.classifier[1], TORCH_HEAD)
    mapper.finish()
