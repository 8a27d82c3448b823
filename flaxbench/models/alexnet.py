"""torchvision's AlexNet in Flax NNX, NHWC.

`features` and `classifier` are lists indexed like torchvision's Sequentials (ReLU and pooling
included), so `classifier.1.weight` in a torchvision state_dict is `model.classifier[1]`.
"""

from __future__ import annotations

import jax
from flax import nnx

from flaxbench.models.dropout import Dropout
from flaxbench.models.convolution import torch_conv2d
from flaxbench.models.layers import adaptive_avg_pool2d, check_min_size, max_pool2d, torch_linear


class ReLU(nnx.Module):
    """Stateless `nn.ReLU`, kept as a list entry so indices match torchvision's."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(x)


class MaxPool2d(nnx.Module):
    """Stateless `nn.MaxPool2d(kernel_size, stride)` (floor mode, no padding)."""

    def __init__(self, kernel_size: int, stride: int):
        self.kernel_size = kernel_size
        self.stride = stride

    def __call__(self, x: jax.Array) -> jax.Array:
        return max_pool2d(x, self.kernel_size, self.stride)


def flatten_nchw(x: jax.Array) -> jax.Array:
    """`torch.flatten(x, 1)` of the NCHW tensor that NHWC `x` stands for (channel-major order)."""
    return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)


class AlexNet(nnx.Module):
    """torchvision.models.AlexNet: `features`, adaptive 6x6 average pool, `classifier`."""

    head_path = ("classifier", 6)
    # Smallest side whose feature map still fills the last 3x3 max pool (torchvision fails at 62).
    min_size = 63

    def __init__(self, num_classes: int = 1000, *, dropout: float = 0.5, rngs: nnx.Rngs):
        self.features = nnx.List(
            [
                torch_conv2d(3, 64, 11, 4, 2, rngs=rngs),
                ReLU(),
                MaxPool2d(3, 2),
                torch_conv2d(64, 192, 5, 1, 2, rngs=rngs),
                ReLU(),
                MaxPool2d(3, 2),
                torch_conv2d(192, 384, 3, 1, 1, rngs=rngs),
                ReLU(),
                torch_conv2d(384, 256, 3, 1, 1, rngs=rngs),
                ReLU(),
                torch_conv2d(256, 256, 3, 1, 1, rngs=rngs),
                ReLU(),
                MaxPool2d(3, 2),
            ]
        )
        self.classifier = nnx.List(
            [
                Dropout(dropout, rngs=rngs),
                torch_linear(256 * 6 * 6, 4096, rngs=rngs),
                ReLU(),
                Dropout(dropout, rngs=rngs),
                torch_linear(4096, 4096, rngs=rngs),
                ReLU(),
                torch_linear(4096, num_classes, rngs=rngs),
            ]
        )

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_min_size(x, self.min_size, "alexnet")
        for layer in self.features:
            x = layer(x)
        x = flatten_nchw(adaptive_avg_pool2d(x, 6))
        for layer in self.classifier:
            x = layer(x, deterministic=not train) if isinstance(layer, Dropout) else layer(x)
        return x

    def reset_head(self, num_classes: int, *, rngs: nnx.Rngs) -> None:
        """Replace the last classifier layer with a fresh one of `num_classes` outputs."""
        self.classifier[6] = torch_linear(self.classifier[6].in_features, num_classes, rngs=rngs)


def alexnet(num_classes: int = 1000, *, rngs: nnx.Rngs, dropout: float = 0.5) -> AlexNet:
    """AlexNet as torchvision builds it; `dropout` is the rate of both classifier dropouts."""
    return AlexNet(num_classes, dropout=dropout, rngs=rngs)
