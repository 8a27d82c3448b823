"""Building a run: a random init for training, no init at all for restoring a checkpoint, the FLOPs it reports."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.monitoring
import numpy as np
import pytest
from flax import nnx

from flaxbench.train.setup import build_run, flops_per_image, init_model
from tests.helpers import tiny_spec

if TYPE_CHECKING:
    import torch

CLASSES = ("a", "b", "c")


def resnet18_spec():
    """ResNet-18 from scratch on 32 px tiles: one distinct weight shape per few layers."""
    return tiny_spec(**{"model.name": "resnet18", "model.options": {}, "model.init": "scratch"})


def test_a_random_init_compiles_programs(backend_compiles):
    init_model(resnet18_spec(), CLASSES, 32)
    assert len(backend_compiles) >= 10  # one per weight shape; the counter below would miss nothing


def test_a_model_built_for_restoring_compiles_nothing(backend_compiles):
    model = init_model(resnet18_spec(), CLASSES, 32, load_weights=False)
    # seeding its dropout stream takes 3 scalar programs; a random init takes one per weight shape (above)
    assert len(backend_compiles) <= 3, f"{len(backend_compiles)} programs compiled to build a model only restored into"
    drawn = init_model(resnet18_spec(), CLASSES, 32)
    built, expected = nnx.state(model, nnx.Param), nnx.state(drawn, nnx.Param)
    assert jax.tree.structure(built) == jax.tree.structure(expected)
    for leaf, like in zip(jax.tree.leaves(built), jax.tree.leaves(expected)):
        assert (leaf.shape, leaf.dtype) == (like.shape, like.dtype)
        assert not np.any(np.asarray(leaf))  # zeros: nothing drawn that the checkpoint then replaces


def in_image_multiply_adds(model: torch.nn.Module, size: int) -> int:
    """Twice the multiply-adds of `model`'s convolutions and linear layers on one image, padded taps left out as XLA does."""
    import torch

    total = 0

    def count(layer, inputs, _output):
        nonlocal total
        if isinstance(layer, torch.nn.Conv2d):
            ones = torch.ones(1, 1, *inputs[0].shape[2:])
            taps = torch.nn.functional.conv2d(ones, torch.ones(1, 1, *layer.kernel_size), stride=layer.stride,
                                              padding=layer.padding, dilation=layer.dilation)
            total += 2 * int(taps.sum()) * layer.in_channels // layer.groups * layer.out_channels
        elif isinstance(layer, torch.nn.Linear):
            total += 2 * layer.in_features * layer.out_features

    for layer in model.modules():
        layer.register_forward_hook(count)
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    return total


def test_flops_per_image_counts_the_model_not_its_cpu_forms():
    torchvision = pytest.importorskip("torchvision")
    # at 64 px the CPU runs ResNet-18's 3x3 convolutions by Winograd, which multiplies less
    run = build_run(tiny_spec(**{"model.name": "resnet18", "model.options": {}, "data.image_size": 64}))
    counted = flops_per_image(run, run.initial_state())
    expected = in_image_multiply_adds(torchvision.models.resnet18(num_classes=len(run.dataset.classes)), 64)
    # what XLA counts beyond the multiply-adds (batch norm, ReLU, residual adds) measured 0.4% here
    assert expected <= counted <= 1.01 * expected


@pytest.mark.parametrize("split", [(0.8, 0.2, 0.0), (0.8, 0.0, 0.2)])
def test_a_split_without_val_or_test_tiles_names_the_split_before_decoding(tmp_path, monkeypatch, split):
    from data_pipeline import source_access
    from flaxbench.errors import SpecError
    from tests.data_pipeline.helpers import write_tiles

    root = write_tiles(tmp_path / "tiles", {"a": 10, "b": 10})
    monkeypatch.setattr(source_access, "decode_listed", lambda *a, **k: pytest.fail("a tile was decoded"))
    spec = tiny_spec(**{"data.source": f"folder:{root}", "data.split": split, "data.image_size": None,
                      "data.classes": None})
    empty = "val" if split[1] == 0 else "test"
    with pytest.raises(SpecError, match=rf"leaves no {empty} tiles; training needs val tiles"):
        build_run(spec)
