"""The study's small CNN trained from scratch: 3 conv blocks + 2 dense layers."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from flaxbench.models.dropout import Dropout
from flaxbench.models.convolution import conv2d
from flaxbench.models.layers import check_min_size, max_pool2d


class ConvModel(nnx.Module):
    """[conv3x3 -> ReLU -> maxpool2] x 3 -> flatten -> dense -> ReLU -> dropout -> dense."""

    head_path = ("fc2",)
    min_size = 8

    def __init__(
        self,
        num_classes: int = 6,
        *,
        image_size: int = 150,
        channels: Sequence[int] = (32, 64, 128),
        hidden: int = 256,
        dropout: float = 0.5,
        rngs: nnx.Rngs,
    ):
        if len(channels) != 3:
            raise ValueError(f"ConvModel takes 3 conv channel counts, got {tuple(channels)}")
        self.image_size = image_size
        self.conv1 = conv2d(3, channels[0], 3, padding=1, rngs=rngs)
        self.conv2 = conv2d(channels[0], channels[1], 3, padding=1, rngs=rngs)
        self.conv3 = conv2d(channels[1], channels[2], 3, padding=1, rngs=rngs)
        side = image_size // 8
        self.fc1 = nnx.Linear(side * side * channels[2], hidden, rngs=rngs)
        self.dropout = Dropout(dropout, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_min_size(x, self.min_size, "ConvModel")
        if x.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(
                f"ConvModel was built for {self.image_size}x{self.image_size} images, got "
                f"{x.shape[1]}x{x.shape[2]}; set spec.model.options.image_size to match"
            )
        for conv in (self.conv1, self.conv2, self.conv3):
            x = max_pool2d(jax.nn.relu(conv(x)), 2)
        x = x.reshape(x.shape[0], -1)
        x = self.dropout(jax.nn.relu(self.fc1(x)), deterministic=not train)
        return self.fc2(x)

    def reset_head(self, num_classes: int, *, rngs: nnx.Rngs) -> None:
        """Replace the classifier with a fresh one."""
        self.fc2 = nnx.Linear(self.fc2.in_features, num_classes, rngs=rngs)
