"""Offline demo: ConvModel on the synthetic tissue-texture source (no download, CPU-friendly).

    python -m flaxbench --spec specs/demo.py

Runs in under 2 minutes on a 2-core CPU (55-90 s measured on a shared, busy one). Expected:
test accuracy about 0.92 on the 240 synthetic test tiles (91.7% measured, 95% CI 87.5-94.5%;
SYNTHETIC DATA: a check that everything works, not a histology result).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402


def get_config():
    """Small synthetic run: 6 classes x 200 tiles at 64 px, 12 epochs."""
    c = common.get_config()
    c.title = "ConvModel demo (synthetic)"
    c.data.source = "synthetic"
    c.data.synthetic_per_class = 200
    c.data.image_size = 64
    c.data.split = (0.6, 0.2, 0.2)
    c.model.name = "convmodel"
    c.model.options = dict(channels=(16, 32, 64), hidden=128, dropout=0.3)
    c.train.epochs = 12
    c.train.batch_size = 32
    c.train.learning_rate = 2e-3
    return c
