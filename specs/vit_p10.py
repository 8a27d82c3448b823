"""ViT patch 10 trained from scratch on Kather 2016 (study row: 75.3% test accuracy, 359.7 s).

    python -m flaxbench --spec specs/vit_p10.py

Expected: test accuracy around the study's 75.3% after 30 epochs; 225 patches of 10x10 px per
150 px tile, so about 2-3x the cost of patch 15.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402


def get_config():
    """ViT, patch 10, depth 9, width 64, 4 heads, MLP 128."""
    c = common.get_config()
    c.title = "ViT patch 10 ({init})"
    c.model.name = "vit"
    c.model.options = dict(patch_size=10, depth=9, width=64, num_heads=4, mlp_dim=128, dropout=0.1,
                           attention_dropout=0.0)  # as torchvision: no dropout on attention weights
    return c
