"""The supernets a search starts from: MobileNetV2-like and ResNet-like graphs of searchable layers,
each block with an identity option (depth)."""

from __future__ import annotations

from core.errors import UsageError
from search.space.graph import GraphNet
from search.space.fixed_layers import Add, GlobalAveragePool
from search.space.layers import SearchableConv2d, SearchableDense, SearchableDepthwiseConv2d


class _Builder:
    """Appends layers to a GraphNet while tracking channel counts, so supernets read like their diagrams."""

    def __init__(self, net: GraphNet, **layer_options):
        self.net, self.options = net, layer_options
        self.channels = {"input": net.input_shape[2]}
        self.last = "input"

    def _add(self, name, layer, channels, *sources):
        self.last = self.net.append(name, layer, *sources)
        self.channels[name] = channels
        return name

    def conv(self, name, out_channels, kernel, stride=1, activation="relu6", source=None):
        source = source or self.last
        layer = SearchableConv2d(self.channels[source], out_channels, kernel, stride, activation=activation,
                                 **self.options)
        return self._add(name, layer, out_channels, source)

    def dwconv(self, name, kernel, stride=1, activation="relu6"):
        channels = self.channels[self.last]
        layer = SearchableDepthwiseConv2d(channels, kernel, stride, activation=activation, **self.options)
        return self._add(name, layer, channels, self.last)

    def add(self, name, a, b, activation="none"):
        return self._add(name, Add(activation), self.channels[a], a, b)

    def gap(self, name):
        return self._add(name, GlobalAveragePool(), self.channels[self.last], self.last)

    def dense(self, name, out_features):
        options = {**self.options, "width_options": (1.0,)}  # class logits are never dropped
        layer = SearchableDense(self.channels[self.last], out_features, **options)
        return self._add(name, layer, out_features, self.last)


# (expansion t, output channels c, stride s) per inverted-residual block, after a stride-2 stem of 16.
MBV2_BLOCKS = ((4, 24, 1), (4, 32, 2), (4, 32, 1), (4, 64, 2), (4, 64, 1))
MBV2_STEM, MBV2_HEAD = 16, 192
# (output channels, stride) per basic block, after a stride-2 stem of 16; the stride-1 blocks with an
# identity shortcut can be skipped (the identity option that varies depth).
RESNET_BLOCKS = ((16, 1), (32, 2), (32, 1), (64, 2), (64, 1))
RESNET_STEM = 16


def mbv2_supernet(input_shape=(28, 28, 1), num_classes: int = 10, batchnorm: bool = True,
                  **layer_options) -> GraphNet:
    """MobileNetV2-style: stem conv3x3/2 -> inverted residuals (expand 1x1 relu6, dw 3x3 relu6,
    project 1x1 linear, residual add when stride 1 and channels match) -> 1x1 relu6 -> gap -> dense."""
    net = GraphNet(input_shape, num_classes, "mbv2")
    build = _Builder(net, batchnorm=batchnorm, **layer_options)
    build.conv("stem", MBV2_STEM, 3, stride=2)
    for index, (expansion, channels, stride) in enumerate(MBV2_BLOCKS, start=1):
        block_input = build.last
        build.conv(f"b{index}_expand", build.channels[block_input] * expansion, 1)
        build.dwconv(f"b{index}_dw", 3, stride)
        build.conv(f"b{index}_project", channels, 1, activation="none")
        if stride == 1 and build.channels[block_input] == channels:
            add = build.add(f"b{index}_add", block_input, build.last)
            net.blocks[add] = (f"b{index}_expand", f"b{index}_dw", f"b{index}_project")
    build.conv("head", MBV2_HEAD, 1)
    build.gap("pool")
    build.dense("fc", num_classes)
    return net


def resnet_supernet(input_shape=(28, 28, 1), num_classes: int = 10, batchnorm: bool = True,
                    **layer_options) -> GraphNet:
    """ResNet-style: stem conv3x3/2 -> basic blocks (3x3 relu, 3x3 linear, add + relu; a 1x1
    projection shortcut where stride or channels change) -> gap -> dense."""
    net = GraphNet(input_shape, num_classes, "resnet")
    build = _Builder(net, batchnorm=batchnorm, **layer_options)
    build.conv("stem", RESNET_STEM, 3, stride=2, activation="relu")
    for index, (channels, stride) in enumerate(RESNET_BLOCKS, start=1):
        block_input = build.last
        shortcut = block_input
        if stride != 1 or build.channels[block_input] != channels:
            shortcut = build.conv(f"b{index}_shortcut", channels, 1, stride, activation="none", source=block_input)
        build.conv(f"b{index}_conv1", channels, 3, stride, activation="relu", source=block_input)
        build.conv(f"b{index}_conv2", channels, 3, activation="none")
        add = build.add(f"b{index}_add", shortcut, build.last, activation="relu")
        if shortcut == block_input:
            net.blocks[add] = (f"b{index}_conv1", f"b{index}_conv2")
    build.gap("pool")
    build.dense("fc", num_classes)
    return net


SUPERNETS = {"mbv2": mbv2_supernet, "resnet": resnet_supernet}


def make_supernet(name: str, input_shape, num_classes: int, **options) -> GraphNet:
    if name not in SUPERNETS:
        raise UsageError(f"unknown supernet {name!r}; choose one of {', '.join(SUPERNETS)}")
    return SUPERNETS[name](input_shape, num_classes, **options)
