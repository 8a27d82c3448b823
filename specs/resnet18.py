"""ResNet18 (ImageNet) fine-tuned on Kather 2016 (study row: 93.0% test accuracy, 148.5 s).

    python -m flaxbench --spec specs/resnet18.py
    python -m flaxbench --spec specs/resnet18.py --spec.model.init=torchvision:/path/to/resnet18.pth  # offline

Weights: torchvision's ImageNet weights, downloaded on first use; offline, see specs/pretrained.py.
Expected: test accuracy around the study's 93.0% after 30 epochs at native 150 px.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import pretrained  # noqa: E402


def get_config():
    """ResNet18 (ImageNet), all layers fine-tuned."""
    return pretrained.get_config("resnet18", "ResNet18 ({init})")
