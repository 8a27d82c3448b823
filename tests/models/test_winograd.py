"""Winograd F(4x4, 3x3): the same convolution and gradients as XLA's, and when CPU convolutions take it."""

import numpy as np
import pytest

from tests.models.torch_parity import assert_close_to_scale


def direct_conv(x, kernel):
    import jax

    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("shape,out_channels", [((2, 8, 8, 3), 5), ((2, 9, 13, 4), 6), ((1, 24, 17, 8), 8), ((3, 4, 4, 2), 3)])
def test_winograd_equals_the_direct_convolution_and_its_gradients(shape, out_channels):
    import jax

    from flaxbench.models.winograd import winograd_conv3x3

    x = jax.random.normal(jax.random.key(0), shape)
    kernel = jax.random.normal(jax.random.key(1), (3, 3, shape[-1], out_channels))
    cotangent = jax.random.normal(jax.random.key(2), (*shape[:3], out_channels))
    ours, ours_vjp = jax.vjp(jax.jit(winograd_conv3x3), x, kernel)
    theirs, theirs_vjp = jax.vjp(direct_conv, x, kernel)
    assert_close_to_scale(ours, theirs, rtol=1e-5)
    for ours_grad, theirs_grad in zip(ours_vjp(cotangent), theirs_vjp(cotangent)):
        assert_close_to_scale(ours_grad, theirs_grad, rtol=1e-5)


def test_winograd_is_chosen_where_it_was_measured_faster():
    import jax.numpy as jnp

    from flaxbench.models.winograd import winograd_applies

    def applies(size=19, channels=128, out_channels=None, batch=64, kernel=3, stride=1, pad=1, dtype=jnp.float32):
        x = jnp.zeros((batch, size, size, channels), dtype)
        kernel = jnp.zeros((kernel, kernel, channels, out_channels or channels), dtype)
        return winograd_applies(x, kernel, (stride, stride), ((pad, pad), (pad, pad)))

    assert applies() and applies(size=10, channels=256) and applies(size=7, channels=512)
    assert not applies(size=5, channels=512) and not applies(size=9)  # tiles mostly padding
    assert not applies(out_channels=32) and not applies(channels=16, out_channels=32)  # thin matmuls
    assert applies(size=8, channels=384) and not applies(size=8, channels=384, batch=63)  # 256 tiles or 252
    assert not applies(size=38, channels=64) and applies(size=38, channels=64, batch=32)  # 59 MB of tiles or 30
    assert applies(size=38, channels=128)  # wide enough to pay for 118 MB
    assert not applies(stride=2) and not applies(pad=0) and not applies(kernel=5, pad=2)
    assert not applies(dtype=jnp.bfloat16)


def test_cpu_conv2d_where_winograd_applies_runs_matmuls_not_a_convolution():
    import jax
    from flax import nnx

    from flaxbench.models.convolution import Conv2d, conv2d

    conv = conv2d(64, 64, 3, 1, 1, bias=True, rngs=nnx.Rngs(0))
    assert isinstance(conv, Conv2d)
    x = jax.random.normal(jax.random.key(1), (29, 10, 10, 64))  # 29 x 3 x 3 = 261 tiles
    assert "conv_general_dilated" not in str(jax.make_jaxpr(lambda x: conv(x))(x))
    cotangent = jax.random.normal(jax.random.key(2), (29, 10, 10, 64))

    def loss(layer, x, call):
        return (call(layer, x) * cotangent).sum()

    assert_close_to_scale(conv(x), nnx.Conv.__call__(conv, x), rtol=1e-5)
    ours = nnx.grad(loss, argnums=(0, 1))(conv, x, Conv2d.__call__)
    plain = nnx.grad(loss, argnums=(0, 1))(conv, x, nnx.Conv.__call__)
    for name in ("kernel", "bias"):
        assert_close_to_scale(ours[0][name][...], plain[0][name][...], rtol=1e-5)
    assert_close_to_scale(ours[1], plain[1], rtol=1e-5)


def test_winograd_rounding_error_in_float32_stays_near_the_direct_convolutions():
    import jax.numpy as jnp

    from flaxbench.models.winograd import winograd_conv3x3

    rng = np.random.default_rng(0)
    x, kernel = rng.standard_normal((4, 19, 19, 64)), rng.standard_normal((3, 3, 64, 32)) / 24
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    exact = sum(np.einsum("nhwc,co->nhwo", padded[:, i : i + 19, j : j + 19], kernel[i, j]) for i in range(3) for j in range(3))
    ours = np.asarray(winograd_conv3x3(jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32)), np.float64)
    direct = np.asarray(direct_conv(jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32)), np.float64)
    scale = np.abs(exact).max()
    # measured here: largest error 2.7e-6 of the scale with winograd.py's interpolation points,
    # 5.8e-6 with Lavin and Gray's, 5.8e-7 direct; mean error 3.0x the direct one's (theirs 4.2x)
    assert np.abs(ours - exact).max() <= 4e-6 * scale
    assert np.abs(ours - exact).mean() <= 3.6 * np.abs(direct - exact).mean()
