"""GoogLeNet (Inception v1) as torchvision builds it, in Flax NNX on NHWC images.

Mirrors `torchvision.models.googlenet(aux_logits=False)`: BasicConv2d = conv (no bias) + BN
(eps 1e-3) + ReLU, ceil_mode max-pools, and torchvision's Inception branch3 whose "5x5" conv is
a 3x3 conv (https://github.com/pytorch/vision/issues/906), which its ImageNet weights assume.
The auxiliary classifiers are not built: they only feed training losses in torchvision.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flaxbench.models.dropout import Dropout
from flaxbench.models.convolution import conv2d
from flaxbench.models.layers import BatchNorm2d, adaptive_avg_pool2d, check_min_size, max_pool2d, torch_uniform

# torchvision's forward works from 15x15 px (GoogLeNet_Weights meta "min_size" agrees).
MIN_SIZE = 15

# torchvision draws every conv and Linear weight from N(0, 0.01) truncated at +-2 (200 sigma, so
# untruncated in effect); the Linear's bias keeps torch's default U(+-1/sqrt(fan_in)).
_WEIGHT_INIT = nnx.initializers.normal(0.01)

# transform_input: re-normalise ImageNet-normalised images to the (x - 0.5) / 0.5 scaling that
# the original Inception weights expect, per RGB channel: x * std / 0.5 + (mean - 0.5) / 0.5.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_TRANSFORM_SCALE = tuple(s / 0.5 for s in _IMAGENET_STD)
_TRANSFORM_SHIFT = tuple((m - 0.5) / 0.5 for m in _IMAGENET_MEAN)


def _ceil_max_pool2d(x: jax.Array, kernel_size: int, stride: int) -> jax.Array:
    """torch `MaxPool2d(kernel_size, stride, ceil_mode=True)`, also on maps smaller than the window.

    With ceil_mode torch still emits one window when the map is a little smaller than the kernel
    (e.g. 2 px under a 3 px window); layers.max_pool2d refuses such maps, so pad the far side
    with -inf up to the kernel size, which yields the same single window.
    """
    grow_h = max(kernel_size - x.shape[1], 0)
    grow_w = max(kernel_size - x.shape[2], 0)
    if grow_h or grow_w:
        x = jnp.pad(x, ((0, 0), (0, grow_h), (0, grow_w), (0, 0)), constant_values=-jnp.inf)
    return max_pool2d(x, kernel_size, stride, ceil_mode=True)


class BasicConv2d(nnx.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        rngs: nnx.Rngs,
    ):
        self.conv = conv2d(
            in_channels, out_channels, kernel_size, stride, padding, bias=False, kernel_init=_WEIGHT_INIT, rngs=rngs
        )
        self.bn = BatchNorm2d(out_channels, eps=1e-3)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return nnx.relu(self.bn(self.conv(x), train))


class Inception(nnx.Module):
    """Four parallel branches (1x1 | 1x1-3x3 | 1x1-3x3 | pool-1x1) concatenated on channels."""

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        *,
        rngs: nnx.Rngs,
    ):
        self.branch1 = BasicConv2d(in_channels, ch1x1, 1, rngs=rngs)
        self.branch2 = nnx.List([
            BasicConv2d(in_channels, ch3x3red, 1, rngs=rngs),
            BasicConv2d(ch3x3red, ch3x3, 3, padding=1, rngs=rngs),
        ])
        self.branch3 = nnx.List([
            BasicConv2d(in_channels, ch5x5red, 1, rngs=rngs),
            # 3x3, not the paper's 5x5: torchvision's layer (and its weights) are 3x3.
            BasicConv2d(ch5x5red, ch5x5, 3, padding=1, rngs=rngs),
        ])
        # torchvision's branch4 is Sequential(MaxPool2d, BasicConv2d): this conv is its "branch4.1".
        self.branch4 = BasicConv2d(in_channels, pool_proj, 1, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        branch1 = self.branch1(x, train)
        branch2 = x
        for layer in self.branch2:
            branch2 = layer(branch2, train)
        branch3 = x
        for layer in self.branch3:
            branch3 = layer(branch3, train)
        branch4 = self.branch4(max_pool2d(x, 3, 1, padding=1, ceil_mode=True), train)
        return jnp.concatenate([branch1, branch2, branch3, branch4], axis=-1)


class GoogLeNet(nnx.Module):
    """torchvision's GoogLeNet without auxiliary heads: NHWC images -> logits."""

    head_path = ("fc",)
    min_size = MIN_SIZE

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        transform_input: bool = False,
        dropout: float = 0.2,
        rngs: nnx.Rngs,
    ):
        self.transform_input = transform_input
        self.conv1 = BasicConv2d(3, 64, 7, stride=2, padding=3, rngs=rngs)
        self.conv2 = BasicConv2d(64, 64, 1, rngs=rngs)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1, rngs=rngs)

        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32, rngs=rngs)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64, rngs=rngs)

        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64, rngs=rngs)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64, rngs=rngs)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64, rngs=rngs)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64, rngs=rngs)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128, rngs=rngs)

        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128, rngs=rngs)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128, rngs=rngs)

        self.dropout = Dropout(dropout, rngs=rngs)
        self.fc = self._new_fc(num_classes, rngs)

    @staticmethod
    def _new_fc(num_classes: int, rngs: nnx.Rngs) -> nnx.Linear:
        return nnx.Linear(
            1024, num_classes, kernel_init=_WEIGHT_INIT, bias_init=torch_uniform(1.0 / 1024**0.5), rngs=rngs
        )

    def reset_head(self, num_classes: int, *, rngs: nnx.Rngs) -> None:
        """Replace the classifier with a fresh one of `num_classes` outputs."""
        self.fc = self._new_fc(num_classes, rngs)

    def _transform_input(self, x: jax.Array) -> jax.Array:
        if not self.transform_input:
            return x
        scale = jnp.asarray(_TRANSFORM_SCALE, x.dtype)
        shift = jnp.asarray(_TRANSFORM_SHIFT, x.dtype)
        return x * scale + shift

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_min_size(x, self.min_size, "googlenet")
        x = self._transform_input(x)
        x = self.conv1(x, train)
        x = _ceil_max_pool2d(x, 3, 2)
        x = self.conv2(x, train)
        x = self.conv3(x, train)
        x = _ceil_max_pool2d(x, 3, 2)

        x = self.inception3a(x, train)
        x = self.inception3b(x, train)
        x = _ceil_max_pool2d(x, 3, 2)

        x = self.inception4a(x, train)
        x = self.inception4b(x, train)
        x = self.inception4c(x, train)
        x = self.inception4d(x, train)
        x = self.inception4e(x, train)
        x = _ceil_max_pool2d(x, 2, 2)

        x = self.inception5a(x, train)
        x = self.inception5b(x, train)

        x = adaptive_avg_pool2d(x, 1).reshape(x.shape[0], -1)
        x = self.dropout(x, deterministic=not train)
        return self.fc(x)


def googlenet(
    num_classes: int = 1000, *, rngs: nnx.Rngs, transform_input: bool = False, dropout: float = 0.2
) -> GoogLeNet:
    """GoogLeNet; `transform_input=True` goes with torchvision's ImageNet weights."""
    return GoogLeNet(num_classes, transform_input=transform_input, dropout=dropout, rngs=rngs)
