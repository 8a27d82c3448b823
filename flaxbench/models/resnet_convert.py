"""torchvision ResNet state_dict -> `flaxbench.models.resnet.ResNet`, key by key."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flaxbench.models.resnet import Bottleneck, ResNet
from flaxbench.models.torch_convert import StateDictMapper

# The classifier's Linear, whose rows are the classes (1000 in the ImageNet weights).
TORCH_HEAD = "fc"


def load_torchvision_state(model: ResNet, state_dict: Mapping[str, np.ndarray]) -> None:
    """Copy a torchvision ResNet state_dict into `model` in place; WeightsError names a bad key."""
    mapper = StateDictMapper(state_dict, model.arch)
    mapper.conv(model.conv1, "conv1")
    mapper.bn(model.bn1, "bn1")
    stages = {"layer1": model.layer1, "layer2": model.layer2, "layer3": model.layer3, "layer4": model.layer4}
    for stage_name, stage in stages.items():
        for index, block in enumerate(stage):
            prefix = f"{stage_name}.{index}"
            mapper.conv(block.conv1, f"{prefix}.conv1")
            mapper.bn(block.bn1, f"{prefix}.bn1")
            mapper.conv(block.conv2, f"{prefix}.conv2")
            mapper.bn(block.bn2, f"{prefix}.bn2")
            if isinstance(block, Bottleneck):
                mapper.conv(block.conv3, f"{prefix}.conv3")
                mapper.bn(block.bn3, f"{prefix}.bn3")
            if block.downsample is not None:
                conv, bn = block.downsample
                mapper.conv(conv, f"{prefix}.downsample.0")
                mapper.bn(bn, f"{prefix}.downsample.1")
    mapper.linear(model.fc, TORCH_HEAD)
    mapper.finish()
