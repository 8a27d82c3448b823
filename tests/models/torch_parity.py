"""Shared checks that a converted NNX model computes what its torchvision original computes."""

from __future__ import annotations

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from flaxbench.weights import load_torchvision, to_numpy


def seeded_torch_model(builder, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A torchvision model with seeded random weights and randomised BN statistics."""
    torch.manual_seed(seed)
    model = builder(weights=None, **kwargs)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.2 * torch.randn(n, generator=gen))
    return model.eval()


def random_images(n: int, size: int | tuple[int, int], seed: int = 0) -> np.ndarray:
    """Normalised-looking float32 NHWC images."""
    h, w = (size, size) if isinstance(size, int) else size
    return np.random.default_rng(seed).normal(size=(n, h, w, 3)).astype(np.float32)


def torch_logits(model: torch.nn.Module, images_nhwc: np.ndarray) -> np.ndarray:
    """torch forward on NHWC numpy images (the model's current train/eval mode)."""
    with torch.no_grad():
        out = model(torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy()))
    if not isinstance(out, torch.Tensor):  # GoogLeNetOutputs in train mode
        out = out.logits if hasattr(out, "logits") else out[0]
    return out.numpy()


def assert_close_to_scale(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-4) -> None:
    """max |actual - expected| <= rtol * max |expected|."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    err = float(np.max(np.abs(actual - expected)))
    assert err <= rtol * scale, f"max abs diff {err:.3g} > {rtol} x logit scale {scale:.3g}"


def assert_eval_parity(arch: str, torch_model: torch.nn.Module, size, n: int = 2) -> None:
    """Converted eval-mode logits equal torchvision's on the same batch."""
    model = load_torchvision(arch, torch_model.state_dict())
    images = random_images(n, size)
    torch_model.eval()
    expected = torch_logits(torch_model, images)
    assert_close_to_scale(np.asarray(model(jnp.asarray(images), train=False)), expected)


def _batch_stats(model: nnx.Module) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]


def assert_train_parity(arch: str, torch_model: torch.nn.Module, size, n: int = 4) -> None:
    """Train-mode logits (BN batch statistics) and updated running statistics equal torch's.

    Build both models without dropout / stochastic depth so that train mode is deterministic.
    """
    model = load_torchvision(arch, torch_model.state_dict())
    images = random_images(n, size, seed=1)
    torch_model.train()
    expected = torch_logits(torch_model, images)
    torch_model.eval()
    assert_close_to_scale(np.asarray(model(jnp.asarray(images), train=True)), expected)
    # Running statistics after one step: load torch's updated buffers into a fresh model.
    reference = load_torchvision(arch, to_numpy(torch_model.state_dict()))
    ours, theirs = _batch_stats(model), _batch_stats(reference)
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# XLA's unoptimised CPU backend compiles the big nets 2-3x faster; the arithmetic is the same.
QUICK_COMPILE = {"xla_backend_optimization_level": 0}


@functools.partial(jax.jit, static_argnums=(0, 3), compiler_options=QUICK_COMPILE)
def _forward(graphdef, state, images: jax.Array, train: bool):
    model = nnx.merge(graphdef, state)
    return model(images, train=train), nnx.state(model)


def compiled_logits(model: nnx.Module, images: jax.Array, train: bool = False) -> jax.Array:
    """The model's forward, compiled once per shape (far cheaper than eager op-by-op compiles).

    In train mode the model's batch statistics (and dropout rng counts) are updated in place.
    """
    graphdef, state = nnx.split(model)
    out, state = _forward(graphdef, state, images, train)
    nnx.update(model, state)
    return out


def params_by_path(model: nnx.Module) -> dict[tuple[str, ...], np.ndarray]:
    """Every parameter and batch statistic of `model` by its attribute path."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)))
    return {tuple(str(p) for p in path): np.asarray(var.get_value()) for path, var in flat}


def assert_compiled_train_parity(arch: str, torch_model: torch.nn.Module, size: int = 64) -> dict:
    """Train-mode logits and the updated running statistics equal torch's (compiled forward).

    Returns our parameters and statistics after the step, by path. `torch_model` is left as it was.
    """
    torch_model = copy.deepcopy(torch_model)  # train mode updates its running statistics
    model = load_torchvision(arch, torch_model.state_dict())
    images = random_images(2, size, seed=1)
    torch_model.train()
    expected = torch_logits(torch_model, images)
    assert_close_to_scale(compiled_logits(model, jnp.asarray(images), train=True), expected)
    ours = params_by_path(model)
    theirs = params_by_path(load_torchvision(arch, torch_model.state_dict()))
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-4, atol=1e-5, err_msg=str(key))
    return ours


def assert_new_head_keeps_backbone(small: nnx.Module, full: nnx.Module, head: str, in_features: int,
                                   num_classes: int = 6, size: int = 97) -> None:
    """`small` (a fresh `num_classes` head named `head`) shares every other weight with `full`."""
    out = nnx.eval_shape(lambda m, x: m(x, train=False), small, jnp.zeros((2, size, size, 3)))
    assert out.shape == (2, num_classes)
    ours, theirs = params_by_path(small), params_by_path(full)
    assert ours.keys() == theirs.keys()
    head_keys = {k for k in ours if k[: len(small.head_path)] == tuple(small.head_path)}
    assert head_keys == {(head, "kernel"), (head, "bias")}
    assert ours[(head, "kernel")].shape == (in_features, num_classes)
    for key in ours.keys() - head_keys:
        np.testing.assert_array_equal(ours[key], theirs[key])
