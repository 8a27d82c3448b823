"""torchvision GoogLeNet state_dict -> flaxbench GoogLeNet, key by key.

torchvision's published GoogLeNet weights also hold the auxiliary classifiers `aux1.*` and
`aux2.*` (its builder loads them, then drops the heads). flaxbench's GoogLeNet has no auxiliary
heads, so keys under exactly those two prefixes are accepted and discarded; every other key
must map onto a layer, and state_dicts without aux keys (aux_logits=False) load the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flaxbench.models.googlenet import BasicConv2d, GoogLeNet, Inception
from flaxbench.models.torch_convert import StateDictMapper

# The classifier's Linear, whose rows are the classes (1000 in the ImageNet weights).
TORCH_HEAD = "fc"

# Auxiliary classifier keys in torchvision's GoogLeNet weights; they have no counterpart here.
AUX_PREFIXES = ("aux1.", "aux2.")

INCEPTION_BLOCKS = (
    "inception3a", "inception3b",
    "inception4a", "inception4b", "inception4c", "inception4d", "inception4e",
    "inception5a", "inception5b",
)


def without_aux_heads(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`state_dict` less the auxiliary classifier keys (`aux1.*`, `aux2.*`)."""
    return {k: v for k, v in state_dict.items() if not k.startswith(AUX_PREFIXES)}


def _basic_conv(mapper: StateDictMapper, block: BasicConv2d, prefix: str) -> None:
    mapper.conv(block.conv, f"{prefix}.conv")
    mapper.bn(block.bn, f"{prefix}.bn")


def _inception(mapper: StateDictMapper, block: Inception, prefix: str) -> None:
    _basic_conv(mapper, block.branch1, f"{prefix}.branch1")
    for i, layer in enumerate(block.branch2):
        _basic_conv(mapper, layer, f"{prefix}.branch2.{i}")
    for i, layer in enumerate(block.branch3):
        _basic_conv(mapper, layer, f"{prefix}.branch3.{i}")
    # branch4.0 is the max-pool (no weights); branch4.1 the 1x1 conv.
    _basic_conv(mapper, block.branch4, f"{prefix}.branch4.1")


def load_torchvision_state(model: GoogLeNet, state_dict: Mapping[str, np.ndarray]) -> None:
    """Copy a torchvision GoogLeNet state_dict (aux heads optional, discarded) into `model`."""
    mapper = StateDictMapper(without_aux_heads(state_dict), "googlenet")
    for name in ("conv1", "conv2", "conv3"):
        _basic_conv(mapper, getattr(model, name), name)
    for name in INCEPTION_BLOCKS:
        _inception(mapper, getattr(model, name), name)
    mapper.linear(model.fc, TORCH_HEAD)
    mapper.finish()
