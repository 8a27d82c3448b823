"""On CPU, the convolutions with their own CPU forms (depthwise, 1x1, small maps) equal nnx.Conv and its autodiff."""

import numpy as np
import pytest


def assert_equals_nnx_conv(conv, call, input_shape, params):
    """`call(conv, x)` and its gradients (`params` of the layer, and x) equal nnx.Conv's and autodiff's."""
    import jax
    from flax import nnx

    x = jax.random.normal(jax.random.key(1), input_shape)
    cotangent = jax.random.normal(jax.random.key(2), nnx.Conv.__call__(conv, x).shape)

    def loss(layer, x, call):
        return (call(layer, x) * cotangent).sum()

    np.testing.assert_allclose(np.asarray(conv(x)), np.asarray(nnx.Conv.__call__(conv, x)), rtol=1e-5, atol=1e-5)
    ours = nnx.grad(loss, argnums=(0, 1))(conv, x, call)
    plain = nnx.grad(loss, argnums=(0, 1))(conv, x, nnx.Conv.__call__)
    for name in params:
        np.testing.assert_allclose(np.asarray(ours[0][name][...]), np.asarray(plain[0][name][...]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(ours[1]), np.asarray(plain[1]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride,bias", [(1, False), (2, True)])
def test_pointwise_conv_on_cpu_equals_the_convolution_and_its_gradients(stride, bias):
    from flax import nnx

    from flaxbench.models.convolution import PointwiseConv2d, conv2d

    conv = conv2d(6, 5, 1, stride, 0, bias=bias, rngs=nnx.Rngs(0))
    assert isinstance(conv, PointwiseConv2d)
    assert_equals_nnx_conv(conv, PointwiseConv2d.__call__, (2, 11, 12, 6), ("kernel", "bias") if bias else ("kernel",))


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (5, 1, 2), (5, 2, 2), (3, 2, 0)])
def test_depthwise_conv_on_cpu_equals_the_grouped_convolution_and_its_gradients(kernel, stride, padding):
    from flax import nnx

    from flaxbench.models.convolution import DepthwiseConv2d, conv2d

    conv = conv2d(6, 6, kernel, stride, padding, groups=6, bias=True, rngs=nnx.Rngs(0))
    assert isinstance(conv, DepthwiseConv2d)
    assert_equals_nnx_conv(conv, DepthwiseConv2d.__call__, (2, 11, 12, 6), ("kernel", "bias"))


@pytest.mark.parametrize("kernel,stride,padding,size", [
    (3, 1, 1, 2), (3, 1, 1, 1), (3, 2, 1, 3), (5, 1, 2, 2), (7, 2, 3, 4),  # maps of <= 8 pixels: the matmul
    (3, 1, 1, 5), (3, 2, 0, 9),  # larger maps: XLA's convolution
])
def test_dense_conv_on_cpu_equals_the_convolution_and_its_gradients(kernel, stride, padding, size):
    from flax import nnx

    from flaxbench.models.convolution import Conv2d, conv2d

    conv = conv2d(6, 5, kernel, stride, padding, bias=True, rngs=nnx.Rngs(0))
    assert isinstance(conv, Conv2d)
    assert_equals_nnx_conv(conv, Conv2d.__call__, (2, size, size, 6), ("kernel", "bias"))
