"""GoogLeNet (ImageNet) fine-tuned on Kather 2016 (study row: 91.7% test accuracy, 162.2 s).

    python -m flaxbench --spec specs/googlenet.py
    python -m flaxbench --spec specs/googlenet.py --spec.model.init=torchvision:/path/to/googlenet.pth  # offline

Weights: torchvision's ImageNet weights, downloaded on first use; offline, see specs/pretrained.py.
Expected: test accuracy around the study's 91.7% after 30 epochs at native 150 px.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import pretrained  # noqa: E402


def get_config():
    """GoogLeNet (ImageNet), all layers fine-tuned."""
    return pretrained.get_config("googlenet", "GoogLeNet ({init})")
