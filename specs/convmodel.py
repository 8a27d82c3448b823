"""ConvModel (3 conv + 2 dense) from scratch on Kather 2016 (study row: 74.7%, 52.8 s).

    python -m flaxbench --spec specs/convmodel.py

Expected: test accuracy around the study's 74.7% after 30 epochs.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402


def get_config():
    """ConvModel: conv 32/64/128, dense 256, dropout 0.5."""
    c = common.get_config()
    c.title = "ConvModel (3 conv + 2 FC)"
    c.model.name = "convmodel"
    c.model.options = dict(channels=(32, 64, 128), hidden=256, dropout=0.5)
    return c
