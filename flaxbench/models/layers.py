"""Layers with PyTorch's exact semantics, shared by the ported torchvision models (NHWC)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxbench.errors import FlaxbenchError
from flaxbench.models.forms import cpu_forms
from flaxbench.models.local_batch import on_local_batch


def torch_uniform(bound: float) -> nnx.Initializer:
    """An initializer drawing from U(-bound, bound), as torch's default `reset_parameters` do."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_linear(in_features: int, out_features: int, *, zero_bias: bool = False, rngs: nnx.Rngs) -> nnx.Linear:
    """`nn.Linear` with torch's default init: weight and bias U(+-1/sqrt(fan_in)) (or a zero bias)."""
    return nnx.Linear(
        in_features,
        out_features,
        kernel_init=nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
        bias_init=nnx.initializers.zeros if zero_bias else torch_uniform(1.0 / math.sqrt(in_features)),
        rngs=rngs,
    )


Moments = tuple[jax.Array, jax.Array]  # per-channel batch mean and biased variance


def batch_moments(x: jax.Array) -> Moments:
    """Per-channel mean and biased variance of `x` over all but its last axis, in float32."""
    x32 = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x32, axis=axes)
    return mean, jnp.mean(jnp.square(x32 - mean), axis=axes)


class BatchNorm2d(nnx.Module):
    """`torch.nn.BatchNorm2d` over the channel axis of NHWC input.

    Differs from `nnx.BatchNorm` where torch differs: `momentum` weights the new batch
    (torch convention), and the running variance is updated with the unbiased batch variance.
    Statistics are kept and computed in float32 whatever the input dtype.
    """

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1):
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))

    def __call__(self, x: jax.Array, train: bool = False, moments: Moments | None = None) -> jax.Array:
        """Normalise `x`; when training, with its batch statistics, or with `moments` if given.

        `moments` must be `batch_moments(x)`, computed by a caller that can reuse them.
        """
        x32 = x.astype(jnp.float32)
        if train:
            mean, var = batch_moments(x) if moments is None else moments
            n = math.prod(x.shape[:-1])
            unbiased = var * (n / max(n - 1, 1))
            m = self.momentum
            self.mean.set_value((1 - m) * self.mean[...] + m * mean)
            self.var.set_value((1 - m) * self.var[...] + m * unbiased)
        else:
            mean, var = self.mean[...], self.var[...]
        scale = self.scale[...].astype(jnp.float32) * jax.lax.rsqrt(var + self.eps)
        shift = self.bias[...].astype(jnp.float32) - mean * scale
        return (x32 * scale + shift).astype(x.dtype)


def _pool_padding(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> tuple[int, int]:
    """Padding (low, high) that yields PyTorch's output length for one spatial axis."""
    span = size + 2 * pad - kernel
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    # PyTorch: the last window must start inside the input or the left padding.
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    if out < 1:
        raise FlaxbenchError(
            f"input of {size} px is too small for a pooling window of {kernel} px (padding {pad}); "
            "use larger images (spec.data.image_size)"
        )
    high = max((out - 1) * stride + kernel - size - pad, 0)
    return pad, high


def max_pool2d(
    x: jax.Array, kernel_size: int, stride: int | None = None, padding: int = 0, ceil_mode: bool = False
) -> jax.Array:
    """`torch.nn.functional.max_pool2d` on NHWC input, `ceil_mode` included."""
    stride = stride or kernel_size
    pads = tuple(_pool_padding(x.shape[a], kernel_size, stride, padding, ceil_mode) for a in (1, 2))
    if stride == kernel_size and pads == ((0, 0), (0, 0)):
        # Non-overlapping windows: a reshape + max, whose gradient XLA:CPU runs much faster
        # than reduce_window's select-and-scatter.
        return _window_blocks(x, kernel_size).max(axis=(2, 4))
    if cpu_forms() and kernel_size * kernel_size <= 127:
        return _max_pool_taps(x, (kernel_size, stride, pads, x.shape[1:3]))
    # A Python scalar init lets JAX pick its differentiable reduce_window_max.
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, kernel_size, kernel_size, 1), (1, stride, stride, 1), [(0, 0), *pads, (0, 0)]
    )


def _window_blocks(x: jax.Array, kernel: int) -> jax.Array:
    """NHWC `x` as (n, oh, kernel, ow, kernel, c) non-overlapping windows; a ragged edge is dropped."""
    n, h, w, c = x.shape
    oh, ow = h // kernel, w // kernel
    return x[:, : oh * kernel, : ow * kernel].reshape(n, oh, kernel, ow, kernel, c)


# Overlapping max pooling on CPU: the k*k window taps as strided slices, and a custom gradient
# that routes each output's gradient to its window's first maximum (torch's choice) through
# interior-padded adds. XLA:CPU's select-and-scatter gradient of reduce_window measured 7-15x
# slower (ReLU + pool, forward + backward: ResNet's 3x3/2 pool on 16 x 75 x 75 x 64, 148 ms vs
# 20 ms; GoogLeNet's 3x3/1 pool on 16 x 19 x 19 x 480, 168 ms vs 11 ms).
# The geometry (kernel, stride, ((top, bottom), (left, right)) padding, (h, w)) is static.
PoolGeometry = tuple[int, int, tuple[tuple[int, int], tuple[int, int]], tuple[int, int]]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_taps(x: jax.Array, geometry: PoolGeometry) -> jax.Array:
    return _max_pool_taps_fwd(x, geometry)[0]


def _pooled_size(geometry: PoolGeometry) -> tuple[int, int]:
    kernel, stride, pads, size = geometry
    return tuple((n + lo + hi - kernel) // stride + 1 for n, (lo, hi) in zip(size, pads))


def _max_pool_taps_fwd(x: jax.Array, geometry: PoolGeometry) -> tuple[jax.Array, jax.Array]:
    kernel, stride, pads, _ = geometry
    oh, ow = _pooled_size(geometry)

    def pool_image(image: jax.Array) -> tuple[jax.Array, jax.Array]:
        padded = jnp.pad(image, [*pads, (0, 0)], constant_values=-jnp.inf)
        best = winner = None
        for tap in range(kernel * kernel):
            i, j = divmod(tap, kernel)
            value = padded[i : i + (oh - 1) * stride + 1 : stride, j : j + (ow - 1) * stride + 1 : stride]
            if best is None:
                best, winner = value, jnp.zeros(value.shape, jnp.int8)
            else:
                better = value > best  # strict: the first maximum in row-major order wins, as in torch
                best, winner = jnp.where(better, value, best), jnp.where(better, jnp.int8(tap), winner)
        return best, winner

    return _per_image(pool_image, x)


def _max_pool_taps_bwd(geometry: PoolGeometry, winner: jax.Array, grad: jax.Array) -> tuple[jax.Array]:
    kernel, stride, ((top, bottom), (left, right)), (h, w) = geometry
    oh, ow = winner.shape[1:3]
    hp, wp = h + top + bottom, w + left + right
    # Each image's gradient passes through a loop step, so XLA materialises it instead of fusing
    # its producer (in DenseNet, the sum of six layers' BatchNorm gradients) into every tap
    # below. The select is a copy (winners are never negative) that XLA cannot fold away.
    grad = _per_image(lambda g, w: jnp.where(w >= 0, g, jnp.zeros((), g.dtype)), grad, winner)
    zero = jnp.zeros((), grad.dtype)
    total = None
    for tap in range(kernel * kernel):
        i, j = divmod(tap, kernel)
        routed = jnp.where(winner == tap, grad, zero)
        # Place output (a, b) at padded input (i + a*stride, j + b*stride).
        placed = jax.lax.pad(routed, zero, [
            (0, 0, 0),
            (i, hp - i - (oh - 1) * stride - 1, stride - 1),
            (j, wp - j - (ow - 1) * stride - 1, stride - 1),
            (0, 0, 0),
        ])
        total = placed if total is None else total + placed
    return (total[:, top : top + h, left : left + w],)


def _per_image(fn: Callable, *batches: jax.Array):
    """`fn` over the images of `batches`, one image per loop step where the batch allows it.

    XLA materialises each loop step's inputs and outputs. Without the loop it fuses the
    elementwise work that produces them into the pooling and recomputes it once per tap of
    every pixel: measured 2-15x slower on the pools above. lax.map cannot split an explicitly
    sharded batch axis; there `fn` runs vectorised. Under a data-parallel mesh each device loops
    over its own images (`on_local_batch`).
    """
    spec = jax.typeof(batches[0]).sharding.spec
    if len(spec) > 0 and spec[0] is not None:
        return jax.vmap(fn)(*batches)
    return on_local_batch(lambda *batches: jax.lax.map(lambda args: fn(*args), batches), batches)


_max_pool_taps.defvjp(_max_pool_taps_fwd, _max_pool_taps_bwd)


def avg_pool2d(x: jax.Array, kernel_size: int, stride: int | None = None, padding: int = 0) -> jax.Array:
    """`torch.nn.functional.avg_pool2d` on NHWC input (count_include_pad=True, floor mode)."""
    stride = stride or kernel_size
    pads = tuple(_pool_padding(x.shape[a], kernel_size, stride, padding, False) for a in (1, 2))
    if stride == kernel_size and pads == ((0, 0), (0, 0)):
        return _window_blocks(x, kernel_size).mean(axis=(2, 4))
    summed = jax.lax.reduce_window(
        x, 0.0, jax.lax.add, (1, kernel_size, kernel_size, 1), (1, stride, stride, 1),
        [(0, 0), *pads, (0, 0)],
    )
    return summed / (kernel_size * kernel_size)


def _adaptive_matrix(size: int, out: int) -> np.ndarray:
    """(out, size) averaging matrix with PyTorch's bins [floor(i*n/o), ceil((i+1)*n/o))."""
    mat = np.zeros((out, size), np.float32)
    for i in range(out):
        start = (i * size) // out
        end = -(-((i + 1) * size) // out)
        mat[i, start:end] = 1.0 / (end - start)
    return mat


def adaptive_avg_pool2d(x: jax.Array, output_size: int | tuple[int, int]) -> jax.Array:
    """`torch.nn.functional.adaptive_avg_pool2d` on NHWC input, also when the map is smaller."""
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    if (oh, ow) == (1, 1):
        return jnp.mean(x, axis=(1, 2), keepdims=True)
    mh = jnp.asarray(_adaptive_matrix(x.shape[1], oh), x.dtype)
    mw = jnp.asarray(_adaptive_matrix(x.shape[2], ow), x.dtype)
    return jnp.einsum("oh,nhwc,pw->nopc", mh, x, mw)


def check_min_size(x: jax.Array, min_size: int, arch: str) -> None:
    """Fail with a clear message when images are smaller than `arch` supports."""
    h, w = x.shape[1], x.shape[2]
    if h < min_size or w < min_size:
        raise FlaxbenchError(
            f"{arch} needs images of at least {min_size}x{min_size} px, got {h}x{w}; "
            "set spec.data.image_size to at least that"
        )
