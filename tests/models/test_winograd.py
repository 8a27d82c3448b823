"""Winograd F(2x2, 3x3), F(4x4, 3x3) and F(5x5, 3x3): the same convolution and gradients as XLA's, and when CPU convolutions take which."""

import numpy as np
import pytest

from tests.models.torch_parity import assert_close_to_scale


def direct_conv(x, kernel):
    import jax

    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("tiling", ["F2X2", "F4X4", "F5X5"])
@pytest.mark.parametrize("shape,out_channels", [((2, 8, 8, 3), 5), ((2, 9, 13, 4), 6), ((1, 24, 17, 8), 8), ((3, 4, 4, 2), 3)])
def test_winograd_equals_the_direct_convolution_and_its_gradients(shape, out_channels, tiling):
    import functools

    import jax

    from flaxbench.models import winograd

    x = jax.random.normal(jax.random.key(0), shape)
    kernel = jax.random.normal(jax.random.key(1), (3, 3, shape[-1], out_channels))
    cotangent = jax.random.normal(jax.random.key(2), (*shape[:3], out_channels))
    convolve = functools.partial(winograd.winograd_conv3x3, tiling=getattr(winograd, tiling))
    ours, ours_vjp = jax.vjp(jax.jit(convolve), x, kernel)
    theirs, theirs_vjp = jax.vjp(direct_conv, x, kernel)
    assert_close_to_scale(ours, theirs, rtol=1e-5)
    for ours_grad, theirs_grad in zip(ours_vjp(cotangent), theirs_vjp(cotangent)):
        assert_close_to_scale(ours_grad, theirs_grad, rtol=1e-5)


def test_the_tiling_chosen_is_the_one_measured_faster():
    import jax.numpy as jnp

    from flaxbench.models.winograd import F2X2, F4X4, F5X5, winograd_tiling

    def tiling(size=19, channels=128, out_channels=None, batch=64, kernel=3, stride=1, pad=1, dtype=jnp.float32):
        x = jnp.zeros((batch, size, size, channels), dtype)
        kernel = jnp.zeros((kernel, kernel, channels, out_channels or channels), dtype)
        return winograd_tiling(x, kernel, (stride, stride), ((pad, pad), (pad, pad)))

    # the fewest multiplies per output pixel: 5x5 tiles where they cover the map exactly or nearly
    assert tiling(size=5, channels=512) is F5X5 and tiling(size=10, channels=256) is F5X5
    assert tiling(size=10, channels=128, out_channels=192) is F5X5 and tiling(size=14, channels=256) is F5X5
    assert tiling(size=9, channels=256) is F5X5  # 1.23x the area, against 1.8x in 4x4 tiles
    # 4x4 tiles where 5x5 ones pad more, or save too few multiplies for their larger transforms
    assert tiling() is F4X4 and tiling(size=38, channels=64) is F4X4  # 13% fewer multiplies in 5x5 tiles
    assert tiling(size=8, channels=384) is F4X4 and tiling(size=7, channels=512) is F4X4
    assert tiling(size=28, channels=128) is F4X4 and tiling(size=56, channels=64) is F4X4  # in pieces: see below
    assert tiling(size=6, channels=256) is F2X2  # as many multiplies as 4x4 tiles (1.8x the area), cheaper transforms
    assert tiling(size=3, channels=512) is None  # mostly padding in any tiles
    assert tiling(out_channels=32) is None and tiling(channels=16, out_channels=32) is None  # thin matmuls
    # 64 tiles at least
    assert tiling(size=5, channels=512, batch=63) is None  # 63 5x5 tiles; 2x2 ones would be 1.44x the area
    assert tiling(size=10, channels=256, batch=16) is F5X5 and tiling(size=10, channels=256, batch=15) is F4X4
    assert tiling(size=10, channels=256, batch=7) is F2X2  # 63 4x4 tiles
    assert tiling(size=8, channels=384, batch=16) is F4X4 and tiling(size=8, channels=384, batch=15) is F2X2
    assert tiling(size=8, channels=384, batch=3) is None
    assert tiling(stride=2) is None and tiling(pad=0) is None and tiling(kernel=5, pad=2) is None
    assert tiling(dtype=jnp.bfloat16) is None


def test_large_batches_are_convolved_in_pieces_of_about_16_mib_of_tiles():
    import jax.numpy as jnp

    from flaxbench.models.winograd import F2X2, F4X4, F5X5, batch_chunks

    def chunks(size, channels, batch=64, tiling=F4X4):
        return batch_chunks(jnp.zeros((batch, size, size, channels)), tiling)

    assert chunks(38, 64) == 4 and chunks(38, 64, batch=16) == 1  # 59 MB of tiles; 15 MB
    assert chunks(19, 128) == 2 and chunks(56, 64) == 8  # 30 MB; 116 MB, in equal pieces
    assert chunks(38, 64, batch=62) == 2 and chunks(38, 64, batch=61) == 1  # 4 wanted; no equal pieces
    assert chunks(7, 512) == 1  # 19 MB, but two pieces would have 128 tiles each
    assert chunks(5, 512, tiling=F2X2) == 2  # 19 MB in 576 tiles
    assert chunks(14, 256, tiling=F5X5) == 2 and chunks(10, 256, tiling=F5X5) == 1  # 29 MB; 13 MB


@pytest.mark.parametrize("tiling", ["F2X2", "F4X4", "F5X5"])
def test_winograd_in_pieces_of_the_batch_equals_the_direct_convolution_and_its_gradients(tiling):
    import jax

    from flaxbench.models import winograd

    x = jax.random.normal(jax.random.key(0), (6, 9, 7, 4))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 4, 6))
    cotangent = jax.random.normal(jax.random.key(2), (6, 9, 7, 6))
    ours, ours_vjp = jax.vjp(lambda x, k: winograd.winograd_conv3x3_chunked(x, k, getattr(winograd, tiling), 3), x, kernel)
    with pytest.raises(ValueError, match="a batch of 6 does not split into 4 equal pieces"):
        winograd.winograd_conv3x3_chunked(x, kernel, getattr(winograd, tiling), 4)
    theirs, theirs_vjp = jax.vjp(direct_conv, x, kernel)
    assert_close_to_scale(ours, theirs, rtol=1e-5)
    for ours_grad, theirs_grad in zip(ours_vjp(cotangent), theirs_vjp(cotangent)):
        assert_close_to_scale(ours_grad, theirs_grad, rtol=1e-5)


# F(4x4, 3x3), F(2x2, 3x3), F(5x5, 3x3), and F(4x4, 3x3) in two pieces of the batch (22 MB of tiles)
@pytest.mark.parametrize("shape", [(64, 8, 8, 64), (64, 6, 6, 64), (64, 5, 5, 64), (24, 38, 38, 64)])
def test_cpu_conv2d_where_winograd_applies_runs_matmuls_not_a_convolution(shape):
    import jax
    from flax import nnx

    from flaxbench.models.convolution import Conv2d, conv2d

    conv = conv2d(64, 64, 3, 1, 1, bias=True, rngs=nnx.Rngs(0))
    assert isinstance(conv, Conv2d)
    x = jax.random.normal(jax.random.key(1), shape)
    assert "conv_general_dilated" not in str(jax.make_jaxpr(lambda x: conv(x))(x))
    cotangent = jax.random.normal(jax.random.key(2), shape)

    def loss(layer, x, call):
        return (call(layer, x) * cotangent).sum()

    assert_close_to_scale(conv(x), nnx.Conv.__call__(conv, x), rtol=1e-5)
    ours = nnx.grad(loss, argnums=(0, 1))(conv, x, Conv2d.__call__)
    plain = nnx.grad(loss, argnums=(0, 1))(conv, x, nnx.Conv.__call__)
    for name in ("kernel", "bias"):
        assert_close_to_scale(ours[0][name][...], plain[0][name][...], rtol=1e-5)
    assert_close_to_scale(ours[1], plain[1], rtol=1e-5)


# measured here, largest error over the scale and mean error over the direct convolution's:
# F(4x4, 3x3) with winograd.py's interpolation points 2.7e-6 and 3.0x (Lavin and Gray's points:
# 5.8e-6 and 4.2x), F(2x2, 3x3) 3.1e-7 and 0.93x, F(5x5, 3x3) 8.0e-6 and 6.9x; the direct
# convolution's largest is 5.8e-7
@pytest.mark.parametrize("tiling,largest,mean_over_direct", [("F4X4", 4e-6, 3.6), ("F2X2", 6e-7, 1.2), ("F5X5", 1.2e-5, 9)])
def test_winograd_rounding_error_in_float32_stays_near_the_direct_convolutions(tiling, largest, mean_over_direct):
    import jax.numpy as jnp

    from flaxbench.models import winograd

    rng = np.random.default_rng(0)
    x, kernel = rng.standard_normal((4, 19, 19, 64)), rng.standard_normal((3, 3, 64, 32)) / 24
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    exact = sum(np.einsum("nhwc,co->nhwo", padded[:, i : i + 19, j : j + 19], kernel[i, j]) for i in range(3) for j in range(3))
    ours = winograd.winograd_conv3x3(jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32), getattr(winograd, tiling))
    ours = np.asarray(ours, np.float64)
    direct = np.asarray(direct_conv(jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32)), np.float64)
    scale = np.abs(exact).max()
    assert np.abs(ours - exact).max() <= largest * scale
    assert np.abs(ours - exact).mean() <= mean_over_direct * np.abs(direct - exact).mean()
