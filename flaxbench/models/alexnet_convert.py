"""torchvision AlexNet state_dict -> `flaxbench.models.alexnet.AlexNet`, key by key."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flaxbench.models.alexnet import AlexNet
from flaxbench.models.torch_convert import StateDictMapper

# The classifier's Linear, whose rows are the classes (1000 in the ImageNet weights).
TORCH_HEAD = "classifier.6"

# Indices of the weighted layers in torchvision's `features` and `classifier` Sequentials.
FEATURE_CONVS = (0, 3, 6, 8, 10)
CLASSIFIER_LINEARS = (1, 4, 6)


def load_torchvision_state(model: AlexNet, state_dict: Mapping[str, np.ndarray]) -> None:
    """Copy a torchvision AlexNet state_dict into `model` in place; WeightsError names a bad key.

    `classifier.1` needs no permutation: the model flattens in torch's NCHW order.
    """
    mapper = StateDictMapper(state_dict, "alexnet")
    for index in FEATURE_CONVS:
        mapper.conv(model.features[index], f"features.{index}")
    for index in CLASSIFIER_LINEARS:
        mapper.linear(model.classifier[index], f"classifier.{index}")
    mapper.finish()
