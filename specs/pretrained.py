"""Shared settings of the ImageNet-pretrained rows (fine-tuning torchvision weights).

Weights: `spec.model.init` is "imagenet" (torchvision downloads them; needs internet once,
cached in ~/.cache/torch). Offline: on a machine with internet run
    python -c "import torchvision; torchvision.models.get_model('resnet18', weights='DEFAULT')"
copy ~/.cache/torch/hub/checkpoints/<file>.pth over, and pass
    --spec.model.init=torchvision:/path/<file>.pth
or convert once with `python -m flaxbench convert --arch resnet18 --torch-weights FILE --out DIR`
and pass --spec.model.init=checkpoint:DIR.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402


def get_config(arch: str, title: str):
    """A fine-tuning row for torchvision architecture `arch`."""
    c = common.get_config()
    c.title = title
    c.model.name = arch
    c.model.init = "imagenet"
    c.data.normalize = "imagenet"  # torchvision's ImageNet mean/std
    c.train.learning_rate = 3e-4
    return c
