"""torchvision's ResNet (v1.5: stride on the 3x3 conv of Bottleneck) in Flax NNX, NHWC.

Attribute names follow torchvision (`conv1`, `bn1`, `layer1`..`layer4`, `downsample`, `fc`), so
`layer2.0.downsample.0.weight` in a torchvision state_dict is `model.layer2[0].downsample[0]`.
"""

from __future__ import annotations

import jax
from flax import nnx

from flaxbench.models.convolution import conv2d
from flaxbench.models.layers import BatchNorm2d, adaptive_avg_pool2d, check_min_size, max_pool2d, torch_linear


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, *, rngs: nnx.Rngs) -> nnx.Conv:
    """3x3 convolution with padding 1 and no bias."""
    return conv2d(in_planes, out_planes, 3, stride, 1, bias=False, rngs=rngs)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1, *, rngs: nnx.Rngs) -> nnx.Conv:
    """1x1 convolution without bias."""
    return conv2d(in_planes, out_planes, 1, stride, 0, bias=False, rngs=rngs)


def run_downsample(downsample: nnx.List | None, x: jax.Array, train: bool) -> jax.Array:
    """The shortcut branch: identity, or torchvision's Sequential(conv1x1, BatchNorm2d)."""
    if downsample is None:
        return x
    conv, bn = downsample
    return bn(conv(x), train)


class BasicBlock(nnx.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nnx.List | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        self.conv1 = conv3x3(inplanes, planes, stride, rngs=rngs)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, rngs=rngs)
        self.bn2 = BatchNorm2d(planes)
        self.downsample = downsample

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        out = jax.nn.relu(self.bn1(self.conv1(x), train))
        out = self.bn2(self.conv2(out), train)
        return jax.nn.relu(out + run_downsample(self.downsample, x, train))


class Bottleneck(nnx.Module):
    """1x1 reduce, 3x3 (strided, as in torchvision v1.5), 1x1 expand, residual (ResNet-50+)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nnx.List | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        width = planes
        self.conv1 = conv1x1(inplanes, width, rngs=rngs)
        self.bn1 = BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, rngs=rngs)
        self.bn2 = BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion, rngs=rngs)
        self.bn3 = BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        out = jax.nn.relu(self.bn1(self.conv1(x), train))
        out = jax.nn.relu(self.bn2(self.conv2(out), train))
        out = self.bn3(self.conv3(out), train)
        return jax.nn.relu(out + run_downsample(self.downsample, x, train))


Block = type[BasicBlock] | type[Bottleneck]


class ResNet(nnx.Module):
    """torchvision.models.ResNet: stem, four stages of residual blocks, global pool, `fc`."""

    head_path = ("fc",)
    # torchvision's forward runs down to a 1x1 map: every conv/pool pads enough for 1 px.
    min_size = 1

    def __init__(
        self,
        block: Block,
        layers: list[int],
        num_classes: int = 1000,
        *,
        arch: str = "resnet",
        rngs: nnx.Rngs,
    ):
        self.arch = arch
        self.inplanes = 64
        self.conv1 = conv2d(3, self.inplanes, 7, 2, 3, bias=False, rngs=rngs)
        self.bn1 = BatchNorm2d(self.inplanes)
        self.layer1 = self._make_layer(block, 64, layers[0], rngs=rngs)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, rngs=rngs)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, rngs=rngs)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, rngs=rngs)
        self.fc = torch_linear(512 * block.expansion, num_classes, rngs=rngs)

    def _make_layer(
        self, block: Block, planes: int, blocks: int, stride: int = 1, *, rngs: nnx.Rngs
    ) -> nnx.List:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nnx.List(
                [
                    conv1x1(self.inplanes, planes * block.expansion, stride, rngs=rngs),
                    BatchNorm2d(planes * block.expansion),
                ]
            )
        stage = [block(self.inplanes, planes, stride, downsample, rngs=rngs)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes, rngs=rngs) for _ in range(1, blocks)]
        return nnx.List(stage)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_min_size(x, self.min_size, self.arch)
        x = jax.nn.relu(self.bn1(self.conv1(x), train))
        x = max_pool2d(x, 3, 2, 1)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for blk in stage:
                x = blk(x, train)
        x = adaptive_avg_pool2d(x, 1)
        return self.fc(x.reshape(x.shape[0], -1))

    def reset_head(self, num_classes: int, *, rngs: nnx.Rngs) -> None:
        """Replace `fc` with a freshly initialised one of `num_classes` outputs."""
        self.fc = torch_linear(self.fc.in_features, num_classes, rngs=rngs)


def resnet18(num_classes: int = 1000, *, rngs: nnx.Rngs) -> ResNet:
    """ResNet-18: BasicBlock x [2, 2, 2, 2]."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, arch="resnet18", rngs=rngs)


def resnet34(num_classes: int = 1000, *, rngs: nnx.Rngs) -> ResNet:
    """ResNet-34: BasicBlock x [3, 4, 6, 3]."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, arch="resnet34", rngs=rngs)


def resnet50(num_classes: int = 1000, *, rngs: nnx.Rngs) -> ResNet:
    """ResNet-50: Bottleneck x [3, 4, 6, 3]."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, arch="resnet50", rngs=rngs)


def resnet101(num_classes: int = 1000, *, rngs: nnx.Rngs) -> ResNet:
    """ResNet-101: Bottleneck x [3, 4, 23, 3]."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, arch="resnet101", rngs=rngs)


def resnet152(num_classes: int = 1000, *, rngs: nnx.Rngs) -> ResNet:
    """ResNet-152: Bottleneck x [3, 8, 36, 3]."""
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes, arch="resnet152", rngs=rngs)
