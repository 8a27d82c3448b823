"""ViT patch 15 trained from scratch on Kather 2016 (study row: 79.5% test accuracy, 129.9 s).

    python -m flaxbench --spec specs/vit_p15.py
    python -m flaxbench --spec specs/vit_p15.py --spec.data.source=folder:/data/Kather_texture_2016_image_tiles_5000.zip

Expected: test accuracy around the study's 79.5% after 30 epochs (from scratch, 6 classes,
2550/600/600); 100 patches of 15x15 px per 150 px tile.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402


def get_config():
    """ViT, patch 15, depth 9, width 64, 4 heads, MLP 128."""
    c = common.get_config()
    c.title = "ViT patch 15 ({init})"
    c.model.name = "vit"
    c.model.options = dict(patch_size=15, depth=9, width=64, num_heads=4, mlp_dim=128, dropout=0.1,
                           attention_dropout=0.0)  # as torchvision: no dropout on attention weights
    return c
