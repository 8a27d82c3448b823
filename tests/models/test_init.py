"""A model built from scratch draws its weights as torchvision draws them, layer by layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from flax import nnx

from flaxbench.models import build_model
from flaxbench.weights import load_torchvision

# (arch, torchvision builder keywords): the torchvision model each port mirrors at 1000 classes.
TORCHVISION_BUILDS = {
    "resnet18": {},
    "alexnet": {},
    "googlenet": {"aux_logits": False, "init_weights": True},
    "densenet121": {},
    "efficientnet_b0": {},
}


def drawn_by_path(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every parameter and BN statistic of `model`, by its dotted path."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)))
    return {".".join(str(p) for p in path): np.asarray(var.get_value()) for path, var in flat}


@pytest.mark.parametrize("arch", sorted(TORCHVISION_BUILDS))
def test_scratch_init_draws_each_tensor_as_torchvision_does(arch):
    torch.manual_seed(0)
    theirs_model = getattr(torchvision.models, arch)(weights=None, **TORCHVISION_BUILDS[arch])
    # Their freshly drawn tensors, through our converter, sit where ours do.
    theirs = drawn_by_path(load_torchvision(arch, theirs_model.state_dict()))
    ours = drawn_by_path(nnx.jit(lambda: build_model(arch, 1000, seed=0))())
    assert ours.keys() == theirs.keys()
    for path, drawn in ours.items():
        like = theirs[path]
        if like.std() == 0:  # a constant: BN's ones and zeros, zero biases
            assert drawn.std() == 0 and drawn.mean() == pytest.approx(like.mean()), path
            continue
        assert drawn.size >= 64, path  # too few draws to compare spreads
        # Five standard errors of the spread and the mean apart at most (fixed seeds, so no flakes).
        error = 5 / np.sqrt(2 * min(drawn.size, like.size))
        ratio = drawn.std() / like.std()
        assert abs(ratio - 1) < max(error, 0.1), f"{path}: std {drawn.std():.4g}, torchvision's {like.std():.4g}"
        assert abs(drawn.mean() - like.mean()) < 5 * like.std() * np.sqrt(1 / drawn.size + 1 / like.size), path
        if drawn.size >= 1000:  # uniform against normal: a normal puts 7.2% of its draws beyond 1.8 std
            beyond = [np.mean(np.abs(x - x.mean()) > 1.8 * x.std()) for x in (drawn, like)]
            assert abs(beyond[0] - beyond[1]) < 0.04, f"{path}: {beyond} beyond 1.8 std, ours and torchvision's"
