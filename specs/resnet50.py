"""ResNet50 (ImageNet) fine-tuned on Kather 2016 (study row: 89.8% test accuracy, 434.3 s).

    python -m flaxbench --spec specs/resnet50.py
    python -m flaxbench --spec specs/resnet50.py --spec.model.init=torchvision:/path/to/resnet50.pth  # offline

Weights: torchvision's ImageNet weights, downloaded on first use; offline, see specs/pretrained.py.
Expected: test accuracy around the study's 89.8% after 30 epochs at native 150 px.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import pretrained  # noqa: E402


def get_config():
    """ResNet50 (ImageNet), all layers fine-tuned."""
    return pretrained.get_config("resnet50", "ResNet50 ({init})")
