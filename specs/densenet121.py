"""DenseNet121 (ImageNet) fine-tuned on Kather 2016 (study row: 93.5% test accuracy, 408.5 s).

    python -m flaxbench --spec specs/densenet121.py
    python -m flaxbench --spec specs/densenet121.py --spec.model.init=torchvision:/path/to/densenet121.pth  # offline

Weights: torchvision's ImageNet weights, downloaded on first use; offline, see specs/pretrained.py.
Expected: test accuracy around the study's 93.5% after 30 epochs at native 150 px.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import pretrained  # noqa: E402


def get_config():
    """DenseNet121 (ImageNet), all layers fine-tuned."""
    return pretrained.get_config("densenet121", "DenseNet121 ({init})")
