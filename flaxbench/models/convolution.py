"""Convolutions with PyTorch's semantics (`conv2d`), and their CPU forms.

On CPU, depthwise and 1x1 convolutions run with hand-written gradients that XLA:CPU executes
much faster than autodiff's, other convolutions over small feature maps run as one matmul, and
3x3 'same' convolutions of the shapes where it pays by Winograd's algorithm;
`benchmarks/README.md` has the measurements. Elsewhere they are plain `nnx.Conv` layers with the
same parameters.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from flaxbench.models.forms import cpu_forms
from flaxbench.models.layers import torch_uniform
from flaxbench.models.local_batch import local_share, on_local_batch
from flaxbench.models.winograd import batch_chunks, winograd_conv3x3_chunked, winograd_tiling

# torchvision's conv inits: `kaiming_normal_(mode="fan_out", nonlinearity="relu")` (ResNet, EfficientNet)
# and `kaiming_normal_` with its default fan_in (DenseNet).
KAIMING_NORMAL_FAN_OUT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
KAIMING_NORMAL_FAN_IN = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
# torch's default `Conv2d.reset_parameters`: kaiming_uniform_(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in)).
TORCH_DEFAULT_KERNEL = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
    *,
    groups: int = 1,
    bias: bool = True,
    kernel_init: nnx.Initializer = KAIMING_NORMAL_FAN_OUT,
    bias_init: nnx.Initializer = nnx.initializers.zeros,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """A `torch.nn.Conv2d` equivalent: explicit symmetric padding, never 'SAME'; inits as given."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    depthwise = groups > 1 and groups == in_channels == out_channels
    pointwise = (kh, kw) == (1, 1) and (ph, pw) == (0, 0) and groups == 1
    layer = DepthwiseConv2d if depthwise else PointwiseConv2d if pointwise else Conv2d if groups == 1 else nnx.Conv
    return layer(
        in_channels,
        out_channels,
        (kh, kw),
        strides=stride,
        padding=((ph, ph), (pw, pw)),
        feature_group_count=groups,
        use_bias=bias,
        kernel_init=kernel_init,
        bias_init=bias_init,
        rngs=rngs,
    )


def torch_conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    *,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """`conv2d` with torch's default init: weight and bias U(+-1/sqrt(fan_in)), as a plain `nn.Conv2d`."""
    fan_in = in_channels * kernel_size * kernel_size
    return conv2d(
        in_channels, out_channels, kernel_size, stride, padding,
        kernel_init=TORCH_DEFAULT_KERNEL, bias_init=torch_uniform(1.0 / fan_in**0.5), rngs=rngs,
    )


class _CpuConv(nnx.Conv):
    """An `nnx.Conv` (same parameters) that on CPU runs `cpu_convolution`; elsewhere the convolution."""

    def __call__(self, x: jax.Array) -> jax.Array:
        """Convolve NHWC `x` with this layer's kernel, then add its bias (if any)."""
        if not cpu_forms():
            return super().__call__(x)
        out = self.cpu_convolution(x, self.kernel[...].astype(x.dtype))
        if self.bias is not None:
            out = out + self.bias[...].astype(x.dtype)
        return out

    def cpu_convolution(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        """The bias-free convolution on CPU, with `kernel` already in `x`'s dtype."""
        raise NotImplementedError


class DepthwiseConv2d(_CpuConv):
    """A depthwise `nnx.Conv` (same parameters) that on CPU runs as k*k shifted multiply-adds.

    XLA:CPU has no fast kernel for grouped convolutions with one channel per group: measured
    here, an EfficientNet-B4 training step with `feature_group_count` ran 3x slower than with
    these shifts, which vectorise well; their hand-written gradient made it 1.8x faster again.
    Other backends use the convolution.
    """

    def cpu_convolution(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        """Depthwise convolution of NHWC `x` with `kernel`, this layer's padding and stride."""
        return depthwise_conv_cpu(x, kernel, _pair(self.strides), tuple(self.padding))


class PointwiseConv2d(_CpuConv):
    """A 1x1 `nnx.Conv` (no padding) whose kernel gradient on CPU is one matmul."""

    def cpu_convolution(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        """1x1 convolution of NHWC `x` with `kernel` and this layer's stride."""
        return pointwise_conv_cpu(x, kernel, _pair(self.strides))


# Output maps of at most this many pixels are convolved as one matmul on CPU (see Conv2d).
SMALL_MAP_PIXELS = 8


class Conv2d(_CpuConv):
    """A dense `nnx.Conv` that on CPU convolves small maps as one matmul, many 3x3 ones by Winograd.

    XLA:CPU's convolution of maps of a few pixels took 15-50x as long as the same sums as a
    matmul (3x3 kernels, 256-512 channels, 1x1 to 2x4 maps: ResNet's last stage at 64 px
    tiles); from 3x3 maps up it was as fast as or faster than the matmul, so larger maps keep it.
    3x3 stride-1 'same' convolutions in float32 run as Winograd F(2x2, 3x3), F(4x4, 3x3) or
    F(5x5, 3x3) matmuls (`winograd.py`) where that was measured faster (`winograd_tiling`; all four
    of ResNet's stages at 150 px and batch 64), large batches in pieces (`batch_chunks`): a ResNet-18
    training step at batch 64 ran 1.12-1.25x faster with F(4x4, 3x3), 1.01-1.06x faster again with
    the pieces, 1.06x again with the kernel transform as one matmul and 1.16x again with
    F(5x5, 3x3) (in-process A/B runs, 2026-12-04 and 12-05).
    """

    def cpu_convolution(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        """Convolution of NHWC `x` with `kernel`, this layer's stride and padding."""
        strides, padding = _pair(self.strides), self.padding
        if not isinstance(padding, str):  # conv2d always gives explicit (low, high) pairs
            padding = tuple(tuple(p) for p in padding)
            out_h, out_w = _output_size(x.shape[1:3], kernel.shape[:2], strides, padding)
            if out_h * out_w <= SMALL_MAP_PIXELS:
                return im2col_conv(x, kernel, strides, padding)
            tiling = winograd_tiling(local_share(x), kernel, strides, padding)
            if tiling is not None:  # the pieces are cut from each device's share of the batch
                return on_local_batch(lambda x, kernel: winograd_conv3x3_chunked(x, kernel, tiling, batch_chunks(x, tiling)),
                                      [x], [kernel])
        return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _output_size(in_hw, kernel_hw, strides, padding) -> tuple[int, int]:
    return tuple((size + low + high - k) // s + 1 for size, k, s, (low, high) in zip(in_hw, kernel_hw, strides, padding))


def im2col_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: tuple) -> jax.Array:
    """Convolution of NHWC `x` with an HWIO `kernel` as one matmul over every tap's window (im2col)."""
    kh, kw, cin, cout = kernel.shape
    padded = jnp.pad(x, [(0, 0), *padding, (0, 0)])
    out_hw = _output_size(x.shape[1:3], (kh, kw), strides, padding)
    columns = jnp.concatenate([window for _, _, window in _taps(padded, (kh, kw), strides, out_hw)], axis=-1)
    out = columns.reshape(-1, kh * kw * cin) @ kernel.reshape(kh * kw * cin, cout)
    return out.reshape(x.shape[0], *out_hw, cout)


def _conv_nhwc(x: jax.Array, kernel: jax.Array, strides: tuple[int, int]) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, strides, "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def pointwise_conv_cpu(x: jax.Array, kernel: jax.Array, strides: tuple[int, int]) -> jax.Array:
    """1x1 convolution of NHWC `x` with a (1, 1, Cin, Cout) kernel; the kernel gradient as a matmul.

    XLA:CPU computes a convolution's kernel gradient through a transposed copy of its whole
    input; for 1x1 kernels that took 1.5-4.5x longer than the same sum as a matmul (ResNet-50
    and EfficientNet-B4 sizes), and training steps gained 10-20% from the matmul (ResNet-50,
    DenseNet-121, EfficientNet-B4). The forward pass and the input gradient stay convolutions.
    """
    return _conv_nhwc(x, kernel, strides)


def _pointwise_fwd(x, kernel, strides):
    return _conv_nhwc(x, kernel, strides), (x, kernel)


def _pointwise_bwd(strides, residuals, grad_out):
    x, kernel = residuals
    grad_x = jax.vjp(lambda x: _conv_nhwc(x, kernel, strides), x)[1](grad_out)[0]
    sh, sw = strides
    pixels = x[:, ::sh, ::sw].reshape(-1, x.shape[-1])
    grad_kernel = jax.lax.dot_general(pixels, grad_out.reshape(-1, grad_out.shape[-1]), (((0,), (0,)), ((), ())))
    return grad_x, grad_kernel.reshape(kernel.shape)


pointwise_conv_cpu.defvjp(_pointwise_fwd, _pointwise_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv_cpu(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: tuple) -> jax.Array:
    """Depthwise convolution of NHWC `x` with an (kh, kw, 1, C) kernel, as shifted multiply-adds.

    The gradient is written out too: under autodiff XLA:CPU wrote every tap's window out as a
    full-size array, k*k per layer and over a third of an EfficientNet-B4 training step.
    """
    return _tap_sum(jnp.pad(x, [(0, 0), *padding, (0, 0)]), kernel, strides)


def _taps(padded: jax.Array, kernel_hw: tuple[int, int], strides: tuple[int, int], out_hw: tuple[int, int]):
    """(i, j, window) for every kernel tap: the strided window of `padded` that tap multiplies."""
    (kh, kw), (sh, sw), (oh, ow) = kernel_hw, strides, out_hw
    for i in range(kh):
        for j in range(kw):
            yield i, j, padded[:, i : i + (oh - 1) * sh + 1 : sh, j : j + (ow - 1) * sw + 1 : sw]


def _tap_sum(padded: jax.Array, kernel: jax.Array, strides: tuple[int, int]) -> jax.Array:
    """sum over taps of window * kernel[tap]: a stride-`strides` correlation of already padded input."""
    (kh, kw), (sh, sw) = kernel.shape[:2], strides
    out_hw = ((padded.shape[1] - kh) // sh + 1, (padded.shape[2] - kw) // sw + 1)
    out = None
    for i, j, window in _taps(padded, (kh, kw), strides, out_hw):
        term = window * kernel[i, j, 0]
        out = term if out is None else out + term
    return jax.lax.optimization_barrier(out)


def _depthwise_fwd(x, kernel, strides, padding):
    return _tap_sum(jnp.pad(x, [(0, 0), *padding, (0, 0)]), kernel, strides), (x, kernel)


def _depthwise_bwd(strides, padding, residuals, grad_out):
    x, kernel = residuals
    (kh, kw), (sh, sw) = kernel.shape[:2], strides
    oh, ow = grad_out.shape[1:3]
    # d input: the cotangent, spread back to stride 1 (zeros between) and padded so that a
    # stride-1 correlation with the flipped kernel lands exactly on the unpadded input.
    spread = [(0, 0, 0)]
    for size, k, s, (low, _), o in ((x.shape[1], kh, sh, padding[0], oh), (x.shape[2], kw, sw, padding[1], ow)):
        lo = k - 1 - low
        spread.append((lo, size + k - 1 - lo - ((o - 1) * s + 1), s - 1))
    spread.append((0, 0, 0))
    grad_padded = jax.lax.pad(grad_out, jnp.zeros((), grad_out.dtype), spread)
    grad_x = _tap_sum(grad_padded, kernel[::-1, ::-1], (1, 1))
    # d kernel: each tap's window of the padded input against the cotangent, summed per channel,
    # one image at a time. XLA:CPU hands such sums to YNNPACK, which takes every window as a
    # written-out array: per image those stay in cache (2-3x faster than the whole batch at once).
    def image_sums(image_and_grad):
        image, grad = image_and_grad
        windows = _taps(image[None], (kh, kw), strides, (oh, ow))
        return jnp.stack([jnp.sum(window * grad, axis=(0, 1, 2)) for _, _, window in windows])

    padded = jnp.pad(x, [(0, 0), *padding, (0, 0)])
    grad_kernel = on_local_batch(lambda padded, grad_out: jax.lax.map(image_sums, (padded, grad_out)).sum(axis=0),
                                 [padded, grad_out], summed=True)
    return grad_x, grad_kernel.reshape(kernel.shape)


depthwise_conv_cpu.defvjp(_depthwise_fwd, _depthwise_bwd)


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)
