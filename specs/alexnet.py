"""AlexNet (ImageNet) fine-tuned on Kather 2016 (study row: 85.0% test accuracy, 95.5 s).

    python -m flaxbench --spec specs/alexnet.py
    python -m flaxbench --spec specs/alexnet.py --spec.model.init=torchvision:/path/to/alexnet.pth  # offline

Weights: torchvision's ImageNet weights, downloaded on first use; offline, see specs/pretrained.py.
Expected: test accuracy around the study's 85.0% after 30 epochs at native 150 px.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import pretrained  # noqa: E402


def get_config():
    """AlexNet (ImageNet), all layers fine-tuned."""
    return pretrained.get_config("alexnet", "AlexNet ({init})")
