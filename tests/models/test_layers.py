"""The torch-exact pooling and BatchNorm layers against torch.nn.functional."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from flaxbench.errors import FlaxbenchError
from flaxbench.models.layers import BatchNorm2d, adaptive_avg_pool2d, avg_pool2d, max_pool2d


def nchw(x):
    return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


@pytest.mark.parametrize("size", [2, 3, 7, 14, 15, 16])
@pytest.mark.parametrize("kernel,stride,padding", [(3, 2, 0), (3, 2, 1), (2, 2, 0), (3, 1, 1)])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool_matches_torch_or_both_refuse(size, kernel, stride, padding, ceil_mode):
    x = np.random.default_rng(size).normal(size=(1, size, size, 2)).astype(np.float32)
    try:
        expected = torch.nn.functional.max_pool2d(nchw(x), kernel, stride, padding, ceil_mode=ceil_mode)
    except RuntimeError:
        with pytest.raises(FlaxbenchError, match="too small"):
            max_pool2d(jnp.asarray(x), kernel, stride, padding, ceil_mode)
        return
    ours = max_pool2d(jnp.asarray(x), kernel, stride, padding, ceil_mode)
    np.testing.assert_allclose(np.asarray(ours).transpose(0, 3, 1, 2), expected.numpy(), rtol=1e-6)


@pytest.mark.parametrize("size", [7, 14, 15])
@pytest.mark.parametrize("kernel,stride,padding", [(3, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0)])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool_gradient_goes_to_torchs_choice_of_maximum(size, kernel, stride, padding, ceil_mode):
    import jax

    # Rounded ReLU output: many windows hold tied maxima, where the gradient's routing shows.
    x = np.maximum(np.round(np.random.default_rng(size).normal(size=(2, size, size, 3)), 1), 0).astype(np.float32)
    weights = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
    expected_out = torch.nn.functional.max_pool2d(nchw(x), kernel, stride, padding, ceil_mode=ceil_mode)
    weights = torch.from_numpy(weights[..., : expected_out.shape[2], : expected_out.shape[3]].copy())
    x_torch = nchw(x).requires_grad_()
    (torch.nn.functional.max_pool2d(x_torch, kernel, stride, padding, ceil_mode=ceil_mode) * weights).sum().backward()
    ours = jax.grad(lambda x: (max_pool2d(x, kernel, stride, padding, ceil_mode)
                               * jnp.asarray(weights.numpy().transpose(0, 2, 3, 1))).sum())(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(ours).transpose(0, 3, 1, 2), x_torch.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_max_pool_on_an_explicitly_sharded_batch_gives_the_same_values_and_gradient():
    import jax
    from jax.sharding import AxisType, NamedSharding, PartitionSpec

    x = np.maximum(np.random.default_rng(3).normal(size=(2, 9, 9, 4)), 0).astype(np.float32)
    mesh = jax.make_mesh((1,), ("data",), axis_types=(AxisType.Explicit,))
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))

    def loss(x):
        return (max_pool2d(x, 3, 2, 1) ** 2).sum()

    with jax.set_mesh(mesh):
        value, grad = jax.jit(jax.value_and_grad(loss))(sharded)
    expected_value, expected_grad = jax.jit(jax.value_and_grad(loss))(jnp.asarray(x))
    np.testing.assert_allclose(float(value), float(expected_value), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(expected_grad), rtol=1e-6)


@pytest.mark.parametrize("size,out", [(4, 6), (5, 6), (13, 6), (150, 6), (7, 3)])
def test_adaptive_avg_pool_uses_torch_bins(size, out):
    x = np.random.default_rng(0).normal(size=(2, size, size + 1, 3)).astype(np.float32)
    expected = torch.nn.functional.adaptive_avg_pool2d(nchw(x), out).numpy()
    np.testing.assert_allclose(np.asarray(adaptive_avg_pool2d(jnp.asarray(x), out)).transpose(0, 3, 1, 2),
                               expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 2, 1), (2, 2, 0)])  # (2, 2, 0): drops the 9th row
def test_avg_pool_counts_padding_like_torch(kernel, stride, padding):
    x = np.random.default_rng(1).normal(size=(1, 9, 9, 2)).astype(np.float32)
    expected = torch.nn.functional.avg_pool2d(nchw(x), kernel, stride, padding).numpy()
    np.testing.assert_allclose(np.asarray(avg_pool2d(jnp.asarray(x), kernel, stride, padding)).transpose(0, 3, 1, 2),
                               expected, rtol=1e-5, atol=1e-6)


def test_batchnorm_train_step_matches_torch_including_unbiased_running_var():
    x = np.random.default_rng(2).normal(2.0, 3.0, size=(4, 5, 5, 3)).astype(np.float32)
    ref = torch.nn.BatchNorm2d(3).train()
    expected = ref(nchw(x)).detach().numpy()
    ours = BatchNorm2d(3)
    out = ours(jnp.asarray(x), train=True)
    np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ours.mean[...]), ref.running_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ours.var[...]), ref.running_var.numpy(), rtol=1e-5)
