"""DenseNet-BC (121/161/169/201) as torchvision builds it, in Flax NNX on NHWC images.

Attribute names follow torchvision's state_dict: `features.conv0`, `features.norm0`,
`features.denseblock{i}.denselayer{j}.{norm1,conv1,norm2,conv2}`,
`features.transition{i}.{norm,conv}`, `features.norm5`, `classifier`. `memory_efficient=True` recomputes each dense layer's
concat-BN-ReLU-1x1conv bottleneck in the backward pass (`nnx.remat`, i.e. jax.checkpoint)
instead of storing it, as torchvision's option does; the numbers are the same.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from flaxbench.models.dropout import Dropout
from flaxbench.models.convolution import KAIMING_NORMAL_FAN_IN, conv2d
from flaxbench.models.layers import (
    BatchNorm2d,
    Moments,
    adaptive_avg_pool2d,
    avg_pool2d,
    batch_moments,
    check_min_size,
    max_pool2d,
    torch_linear,
)

# torchvision's forward works from 29x29 px (its DenseNet weights' meta "min_size" agrees):
# at 28 px the last transition's 2x2 average pool would get a 1 px map.
MIN_SIZE = 29

# torchvision's DenseNet convolutions: no bias, weights from kaiming_normal_ over fan_in.
_conv = functools.partial(conv2d, bias=False, kernel_init=KAIMING_NORMAL_FAN_IN)


class _DenseLayer(nnx.Module):
    """BN-ReLU-1x1conv (bottleneck) then BN-ReLU-3x3conv over the concatenated inputs."""

    def __init__(
        self,
        num_input_features: int,
        growth_rate: int,
        bn_size: int,
        drop_rate: float,
        memory_efficient: bool,
        *,
        rngs: nnx.Rngs,
    ):
        self.norm1 = BatchNorm2d(num_input_features)
        self.conv1 = _conv(num_input_features, bn_size * growth_rate, 1, rngs=rngs)
        self.norm2 = BatchNorm2d(bn_size * growth_rate)
        self.conv2 = _conv(bn_size * growth_rate, growth_rate, 3, padding=1, rngs=rngs)
        self.memory_efficient = memory_efficient
        # torch applies F.dropout only when drop_rate > 0; without it there is no rng stream to keep.
        self.dropout = Dropout(drop_rate, rngs=rngs) if drop_rate > 0 else None

    def bn_function(self, inputs: list[jax.Array], moments: list[Moments] | None, train: bool) -> jax.Array:
        """The bottleneck: concatenate, BN, ReLU, 1x1 conv."""
        concatenated = jnp.concatenate(inputs, axis=-1)
        joined = None if moments is None else tuple(jnp.concatenate(m) for m in zip(*moments))
        return self.conv1(nnx.relu(self.norm1(concatenated, train, joined)))

    def __call__(self, inputs: list[jax.Array], moments: list[Moments] | None = None, train: bool = False) -> jax.Array:
        """The new features from all earlier ones; `moments` holds each input's batch moments, or None."""
        if self.memory_efficient:
            bottleneck = nnx.remat(_checkpointed_bottleneck, static_argnums=3)(self, inputs, moments, train)
        else:
            bottleneck = self.bn_function(inputs, moments, train)
        new_features = self.conv2(nnx.relu(self.norm2(bottleneck, train)))
        if self.dropout is not None:
            new_features = self.dropout(new_features, deterministic=not train)
        return new_features


def _checkpointed_bottleneck(
    layer: _DenseLayer, inputs: list[jax.Array], moments: list[Moments] | None, train: bool
) -> jax.Array:
    return layer.bn_function(inputs, moments, train)


class _DenseBlock(nnx.Module):
    """`num_layers` dense layers `denselayer1..N`, each fed all earlier outputs."""

    def __init__(
        self,
        num_layers: int,
        num_input_features: int,
        bn_size: int,
        growth_rate: int,
        drop_rate: float,
        memory_efficient: bool,
        *,
        rngs: nnx.Rngs,
    ):
        self.num_layers = num_layers
        for i in range(num_layers):
            layer = _DenseLayer(
                num_input_features + i * growth_rate,
                growth_rate,
                bn_size,
                drop_rate,
                memory_efficient,
                rngs=rngs,
            )
            setattr(self, f"denselayer{i + 1}", layer)

    def layers(self) -> list[_DenseLayer]:
        """The dense layers in order."""
        return [getattr(self, f"denselayer{i + 1}") for i in range(self.num_layers)]

    def __call__(self, init_features: jax.Array, train: bool = False) -> jax.Array:
        # In training, every layer's norm1 normalises the concatenation of all earlier feature
        # maps with the batch's per-channel statistics, which for one map are the same in every
        # later layer. Computed once per map and passed on, they spare reducing the whole,
        # ever longer concatenation again in each layer.
        features = [init_features]
        moments = [batch_moments(init_features)] if train else None
        for layer in self.layers():
            features.append(layer(features, moments, train))
            if moments is not None:
                moments.append(batch_moments(features[-1]))
        return jnp.concatenate(features, axis=-1)


class _Transition(nnx.Module):
    """BN-ReLU-1x1conv halving the channels, then 2x2 average pooling."""

    def __init__(self, num_input_features: int, num_output_features: int, *, rngs: nnx.Rngs):
        self.norm = BatchNorm2d(num_input_features)
        self.conv = _conv(num_input_features, num_output_features, 1, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return avg_pool2d(self.conv(nnx.relu(self.norm(x, train))), 2, 2)


class DenseNet(nnx.Module):
    """torchvision's DenseNet-BC: NHWC images -> logits."""

    head_path = ("classifier",)
    min_size = MIN_SIZE

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: tuple[int, ...] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        num_classes: int = 1000,
        memory_efficient: bool = False,
        *,
        arch: str = "densenet",
        rngs: nnx.Rngs,
    ):
        self.arch = arch
        self.num_blocks = len(block_config)
        # torchvision's `features` is a named Sequential; here a dict of the layers with weights
        # (relu0/pool0 have none), run in order by __call__.
        self.features = nnx.Dict()
        self.features["conv0"] = _conv(3, num_init_features, 7, 2, 3, rngs=rngs)
        self.features["norm0"] = BatchNorm2d(num_init_features)
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features[f"denseblock{i + 1}"] = _DenseBlock(
                num_layers, num_features, bn_size, growth_rate, drop_rate, memory_efficient, rngs=rngs
            )
            num_features += num_layers * growth_rate
            if i != len(block_config) - 1:
                transition = _Transition(num_features, num_features // 2, rngs=rngs)
                self.features[f"transition{i + 1}"] = transition
                num_features //= 2
        self.features["norm5"] = BatchNorm2d(num_features)
        self.num_features = num_features
        self.classifier = torch_linear(num_features, num_classes, zero_bias=True, rngs=rngs)

    def reset_head(self, num_classes: int, *, rngs: nnx.Rngs) -> None:
        """Replace the classifier with a fresh one of `num_classes` outputs."""
        self.classifier = torch_linear(self.num_features, num_classes, zero_bias=True, rngs=rngs)

    def _features(self, x: jax.Array, train: bool) -> jax.Array:
        features = self.features
        x = nnx.relu(features["norm0"](features["conv0"](x), train))
        x = max_pool2d(x, 3, 2, padding=1)
        for i in range(1, self.num_blocks + 1):
            x = features[f"denseblock{i}"](x, train)
            if i != self.num_blocks:
                x = features[f"transition{i}"](x, train)
        return features["norm5"](x, train)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_min_size(x, self.min_size, self.arch)
        out = nnx.relu(self._features(x, train))
        out = adaptive_avg_pool2d(out, 1).reshape(out.shape[0], -1)
        return self.classifier(out)


def densenet121(
    num_classes: int = 1000, *, rngs: nnx.Rngs, drop_rate: float = 0.0, memory_efficient: bool = False
) -> DenseNet:
    """DenseNet-121: growth 32, blocks (6, 12, 24, 16), 64 initial features."""
    return DenseNet(
        32, (6, 12, 24, 16), 64, drop_rate=drop_rate, num_classes=num_classes,
        memory_efficient=memory_efficient, arch="densenet121", rngs=rngs,
    )


def densenet161(
    num_classes: int = 1000, *, rngs: nnx.Rngs, drop_rate: float = 0.0, memory_efficient: bool = False
) -> DenseNet:
    """DenseNet-161: growth 48, blocks (6, 12, 36, 24), 96 initial features."""
    return DenseNet(
        48, (6, 12, 36, 24), 96, drop_rate=drop_rate, num_classes=num_classes,
        memory_efficient=memory_efficient, arch="densenet161", rngs=rngs,
    )


def densenet169(
    num_classes: int = 1000, *, rngs: nnx.Rngs, drop_rate: float = 0.0, memory_efficient: bool = False
) -> DenseNet:
    """DenseNet-169: growth 32, blocks (6, 12, 32, 32), 64 initial features."""
    return DenseNet(
        32, (6, 12, 32, 32), 64, drop_rate=drop_rate, num_classes=num_classes,
        memory_efficient=memory_efficient, arch="densenet169", rngs=rngs,
    )


def densenet201(
    num_classes: int = 1000, *, rngs: nnx.Rngs, drop_rate: float = 0.0, memory_efficient: bool = False
) -> DenseNet:
    """DenseNet-201: growth 32, blocks (6, 12, 48, 32), 64 initial features."""
    return DenseNet(
        32, (6, 12, 48, 32), 64, drop_rate=drop_rate, num_classes=num_classes,
        memory_efficient=memory_efficient, arch="densenet201", rngs=rngs,
    )
