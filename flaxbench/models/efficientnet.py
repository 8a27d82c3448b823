"""EfficientNet B0-B7 as torchvision builds them (`torchvision/models/efficientnet.py`), NHWC.

Attribute names follow torchvision's so that the state_dict keys read straight across:
`features.0` (stem), `features.{stage}.{block}.block.{i}` (MBConv layers), `features.8`
(last 1x1 conv), `classifier.1` (the head).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from functools import partial

import jax
from flax import nnx

from flaxbench.errors import SpecError
from flaxbench.models.dropout import Dropout
from flaxbench.models.convolution import conv2d
from flaxbench.models.layers import BatchNorm2d, adaptive_avg_pool2d, check_min_size, torch_uniform

NormLayer = Callable[[int], BatchNorm2d]


def _make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """torchvision's channel rounding: nearest multiple of `divisor`, never more than 10% below `v`."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@dataclasses.dataclass(frozen=True)
class MBConvConfig:
    """One stage of MBConv blocks, channels and depth already scaled."""

    expand_ratio: float
    kernel: int
    stride: int
    input_channels: int
    out_channels: int
    num_layers: int

    @staticmethod
    def adjust_channels(channels: float, width_mult: float) -> int:
        """Scale a channel count by `width_mult` and round it to a multiple of 8."""
        return _make_divisible(channels * width_mult, 8)

    @staticmethod
    def adjust_depth(num_layers: int, depth_mult: float) -> int:
        """Scale a stage's block count by `depth_mult`, rounding up."""
        return int(math.ceil(num_layers * depth_mult))

    @classmethod
    def scaled(
        cls, expand_ratio: float, kernel: int, stride: int, input_channels: int, out_channels: int,
        num_layers: int, width_mult: float, depth_mult: float,
    ) -> MBConvConfig:
        """A stage of the B0 table scaled by width and depth multipliers."""
        return cls(
            expand_ratio, kernel, stride,
            cls.adjust_channels(input_channels, width_mult),
            cls.adjust_channels(out_channels, width_mult),
            cls.adjust_depth(num_layers, depth_mult),
        )


def inverted_residual_setting(width_mult: float, depth_mult: float) -> list[MBConvConfig]:
    """The seven MBConv stages of EfficientNet-B0 scaled to a variant."""
    b0_stages = [  # expand_ratio, kernel, stride, input_channels, out_channels, num_layers
        (1, 3, 1, 32, 16, 1),
        (6, 3, 2, 16, 24, 2),
        (6, 5, 2, 24, 40, 2),
        (6, 3, 2, 40, 80, 3),
        (6, 5, 1, 80, 112, 3),
        (6, 5, 2, 112, 192, 4),
        (6, 3, 1, 192, 320, 1),
    ]
    return [MBConvConfig.scaled(*stage, width_mult, depth_mult) for stage in b0_stages]


class Sequential(nnx.List):
    """torch `nn.Sequential` of layers called as `layer(x, train=...)`; children are named 0, 1, ..."""

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for layer in self:
            x = layer(x, train=train)
        return x


class Conv2dNormActivation(nnx.List):
    """torchvision's `Conv2dNormActivation`: `0` conv (no bias, 'same' padding), `1` BN, then SiLU."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
        *, norm_layer: NormLayer, activation: bool = True, rngs: nnx.Rngs,
    ):
        conv = conv2d(
            in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
            groups=groups, bias=False, rngs=rngs,
        )
        super().__init__([conv, norm_layer(out_channels)])
        self.activation = activation

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = self[1](self[0](x), train=train)
        return jax.nn.silu(x) if self.activation else x


class SqueezeExcitation(nnx.Module):
    """torchvision's `SqueezeExcitation`: global pool -> fc1 -> SiLU -> fc2 -> sigmoid, scales the input."""

    def __init__(self, input_channels: int, squeeze_channels: int, *, rngs: nnx.Rngs):
        self.fc1 = conv2d(input_channels, squeeze_channels, 1, rngs=rngs)
        self.fc2 = conv2d(squeeze_channels, input_channels, 1, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no batch statistics here; the argument keeps the Sequential call uniform
        scale = self.fc2(jax.nn.silu(self.fc1(adaptive_avg_pool2d(x, 1))))
        return x * jax.nn.sigmoid(scale)


class StochasticDepth(nnx.Module):
    """torchvision's `StochasticDepth(p, "row")`: in training, drops each sample's branch with
    probability `p` and scales the kept ones by 1/(1-p); the identity in eval mode."""

    def __init__(self, p: float, *, rngs: nnx.Rngs):
        self.p = p
        self.rngs = rngs["dropout"].fork()

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if not train or self.p == 0.0:
            return x
        survival_rate = 1.0 - self.p
        keep = jax.random.bernoulli(self.rngs(), survival_rate, (x.shape[0],) + (1,) * (x.ndim - 1))
        noise = keep.astype(x.dtype)
        if survival_rate > 0.0:
            noise = noise / survival_rate
        return x * noise


class MBConv(nnx.Module):
    """Inverted residual block: [1x1 expand] -> depthwise kxk -> squeeze-excitation -> 1x1 project."""

    def __init__(self, cnf: MBConvConfig, stochastic_depth_prob: float, norm_layer: NormLayer, *, rngs: nnx.Rngs):
        if not 1 <= cnf.stride <= 2:
            raise ValueError(f"illegal MBConv stride {cnf.stride}")
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        expanded = MBConvConfig.adjust_channels(cnf.input_channels, cnf.expand_ratio)
        layers: list[nnx.Module] = []
        if expanded != cnf.input_channels:
            layers.append(Conv2dNormActivation(cnf.input_channels, expanded, 1, norm_layer=norm_layer, rngs=rngs))
        layers.append(Conv2dNormActivation(
            expanded, expanded, cnf.kernel, cnf.stride, groups=expanded, norm_layer=norm_layer, rngs=rngs
        ))
        layers.append(SqueezeExcitation(expanded, max(1, cnf.input_channels // 4), rngs=rngs))
        layers.append(Conv2dNormActivation(
            expanded, cnf.out_channels, 1, norm_layer=norm_layer, activation=False, rngs=rngs
        ))
        self.block = Sequential(layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, rngs=rngs)
        self.out_channels = cnf.out_channels

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        result = self.block(x, train=train)
        if self.use_res_connect:
            result = self.stochastic_depth(result, train=train) + x
        return result


def _classifier(in_features: int, num_classes: int, rngs: nnx.Rngs) -> nnx.Linear:
    """The head Linear with torchvision's init: weight ~ U(+-1/sqrt(num_classes)), zero bias."""
    return nnx.Linear(in_features, num_classes, kernel_init=torch_uniform(1.0 / math.sqrt(num_classes)), rngs=rngs)


def _check_probability(arch: str, name: str, value: float, *, allow_one: bool) -> None:
    """Reject a dropout-style option outside [0, 1) (or [0, 1])."""
    top_ok = value <= 1.0 if allow_one else value < 1.0
    if not (0.0 <= value and top_ok):
        bound = "[0, 1]" if allow_one else "[0, 1)"
        raise SpecError(f"{arch} option {name}={value} is not a probability in {bound}; set it to e.g. 0.2")


class EfficientNet(nnx.Module):
    """EfficientNet (v1) with torchvision's structure, init and attribute names."""

    head_path = ("classifier", 1)
    # Every conv pads (k-1)//2, so each stride-2 layer maps n px to ceil(n/2) >= 1: any size works.
    min_size = 1

    def __init__(
        self,
        arch: str,
        setting: Sequence[MBConvConfig],
        dropout: float,
        stochastic_depth_prob: float = 0.2,
        num_classes: int = 1000,
        norm_layer: NormLayer = BatchNorm2d,
        *,
        rngs: nnx.Rngs,
    ):
        _check_probability(arch, "dropout", dropout, allow_one=False)
        _check_probability(arch, "stochastic_depth_prob", stochastic_depth_prob, allow_one=True)
        self.arch = arch
        layers: list[nnx.Module] = [
            Conv2dNormActivation(3, setting[0].input_channels, 3, 2, norm_layer=norm_layer, rngs=rngs)
        ]
        total_stage_blocks = sum(cnf.num_layers for cnf in setting)
        stage_block_id = 0
        for cnf in setting:
            stage: list[MBConv] = []
            for _ in range(cnf.num_layers):
                block_cnf = cnf
                if stage:
                    block_cnf = dataclasses.replace(cnf, input_channels=cnf.out_channels, stride=1)
                sd_prob = stochastic_depth_prob * float(stage_block_id) / total_stage_blocks
                stage.append(MBConv(block_cnf, sd_prob, norm_layer, rngs=rngs))
                stage_block_id += 1
            layers.append(Sequential(stage))
        lastconv_input_channels = setting[-1].out_channels
        lastconv_output_channels = 4 * lastconv_input_channels
        layers.append(
            Conv2dNormActivation(lastconv_input_channels, lastconv_output_channels, 1, norm_layer=norm_layer, rngs=rngs)
        )
        self.features = Sequential(layers)
        self.classifier = nnx.List([
            Dropout(dropout, rngs=rngs),
            _classifier(lastconv_output_channels, num_classes, rngs),
        ])

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_min_size(x, self.min_size, self.arch)
        x = self.features(x, train=train)
        x = adaptive_avg_pool2d(x, 1).reshape(x.shape[0], -1)
        x = self.classifier[0](x, deterministic=not train)
        return self.classifier[1](x)

    def reset_head(self, num_classes: int, *, rngs: nnx.Rngs) -> None:
        """Replace the classifier Linear with a fresh one of `num_classes` outputs."""
        self.classifier[1] = _classifier(self.classifier[1].in_features, num_classes, rngs)


# torchvision's B5-B7 use BatchNorm2d(eps=1e-3, momentum=0.01); B0-B4 keep torch's defaults.
_B5_TO_B7_NORM = partial(BatchNorm2d, eps=1e-3, momentum=0.01)


def _efficientnet(
    arch: str, width_mult: float, depth_mult: float, num_classes: int, rngs: nnx.Rngs,
    dropout: float, stochastic_depth_prob: float, norm_layer: NormLayer = BatchNorm2d,
) -> EfficientNet:
    setting = inverted_residual_setting(width_mult, depth_mult)
    return EfficientNet(
        arch, setting, dropout, stochastic_depth_prob, num_classes, norm_layer, rngs=rngs
    )


def efficientnet_b0(
    num_classes: int = 1000, *, rngs: nnx.Rngs, dropout: float = 0.2, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-B0 (width 1.0, depth 1.0)."""
    return _efficientnet("efficientnet_b0", 1.0, 1.0, num_classes, rngs, dropout, stochastic_depth_prob)


def efficientnet_b1(
    num_classes: int = 1000, *, rngs: nnx.Rngs, dropout: float = 0.2, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-B1 (width 1.0, depth 1.1)."""
    return _efficientnet("efficientnet_b1", 1.0, 1.1, num_classes, rngs, dropout, stochastic_depth_prob)


def efficientnet_b2(
    num_classes: int = 1000, *, rngs: nnx.Rngs, dropout: float = 0.3, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-B2 (width 1.1, depth 1.2)."""
    return _efficientnet("efficientnet_b2", 1.1, 1.2, num_classes, rngs, dropout, stochastic_depth_prob)


def efficientnet_b3(
    num_classes: int = 1000, *, rngs: nnx.Rngs, dropout: float = 0.3, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-B3 (width 1.2, depth 1.4)."""
    return _efficientnet("efficientnet_b3", 1.2, 1.4, num_classes, rngs, dropout, stochastic_depth_prob)


def efficientnet_b4(
    num_classes: int = 1000, *, rngs: nnx.Rngs, dropout: float = 0.4, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-B4 (width 1.4, depth 1.8)."""
    return _efficientnet("efficientnet_b4", 1.4, 1.8, num_classes, rngs, dropout, stochastic_depth_prob)


def efficientnet_b5(
    num_classes: int = 1000, *, rngs: nnx.Rngs, dropout: float = 0.4, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-B5 (width 1.6, depth 2.2; BN eps 1e-3, momentum 0.01)."""
    return _efficientnet(
        "efficientnet_b5", 1.6, 2.2, num_classes, rngs, dropout, stochastic_depth_prob, _B5_TO_B7_NORM
    )


def efficientnet_b6(
    num_classes: int = 1000, *, rngs: nnx.Rngs, dropout: float = 0.5, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-B6 (width 1.8, depth 2.6; BN eps 1e-3, momentum 0.01)."""
    return _efficientnet(
        "efficientnet_b6", 1.8, 2.6, num_classes, rngs, dropout, stochastic_depth_prob, _B5_TO_B7_NORM
    )


def efficientnet_b7(
    num_classes: int = 1000, *, rngs: nnx.Rngs, dropout: float = 0.5, stochastic_depth_prob: float = 0.2
) -> EfficientNet:
    """EfficientNet-B7 (width 2.0, depth 3.1; BN eps 1e-3, momentum 0.01)."""
    return _efficientnet(
        "efficientnet_b7", 2.0, 3.1, num_classes, rngs, dropout, stochastic_depth_prob, _B5_TO_B7_NORM
    )
