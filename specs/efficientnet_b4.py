"""EfficientNet-B4 (ImageNet) fine-tuned on Kather 2016 (study row: 92.8% test accuracy, 609.8 s).

    python -m flaxbench --spec specs/efficientnet_b4.py
    python -m flaxbench --spec specs/efficientnet_b4.py --spec.model.init=torchvision:/path/to/efficientnet_b4.pth  # offline

Weights: torchvision's ImageNet weights, downloaded on first use; offline, see specs/pretrained.py.
Expected: test accuracy around the study's 92.8% after 30 epochs at native 150 px.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import pretrained  # noqa: E402


def get_config():
    """EfficientNet-B4 (ImageNet), all layers fine-tuned."""
    return pretrained.get_config("efficientnet_b4", "EfficientNet-B4 ({init})")
