"""The dilated ResNet-50/101 backbone of CCNet, PSPNet and DeepLabv3 (output stride 8).

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), with a deep stem of three
3x3 convs and layer3/layer4 dilated by 2 and 4 instead of strided, as in Chen et al., "Rethinking
Atrous Convolution" (2017). The stem is passed in: ``mit_stem`` (64, 64, 128 channels, the MIT
ImageNet weights ``resnet101-imagenet.pth`` and the official CCNet) or ``v1c_stem`` (32, 32, 64,
mmsegmentation's ResNetV1c, He et al., "Bag of Tricks for Image Classification", CVPR 2019).
"""
import functools
from collections import OrderedDict

import torch
import torch.nn as nn

from sync_batchnorm.recompute import checkpoint

InPlaceReLU = functools.partial(nn.ReLU, inplace=True)
# Bottlenecks per stage of each depth.
DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def mit_stem(norm_layer, act_layer):
    """The stem of the MIT ImageNet weights and the official CCNet: (modules by checkpoint name, in the
    order they run; output channels). Three 3x3 conv-norm-ReLUs 3 -> 64 (stride 2) -> 64 -> 128 and
    a 3x3 stride-2 max-pool rounding up: (B, 3, H, W) -> (B, 128, ceil(ceil(H/2)/2), ...)."""
    modules = OrderedDict()
    for i, (cin, cout, stride) in enumerate(((3, 64, 2), (64, 64, 1), (64, 128, 1)), start=1):
        modules[f"conv{i}"] = nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)
        modules[f"bn{i}"] = norm_layer(cout)
        modules[f"relu{i}"] = act_layer()
    modules["maxpool"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    return modules, 128


def v1c_stem(norm_layer, act_layer):
    """The stem of mmsegmentation's ResNetV1c: (modules by checkpoint name; output channels).
    ``stem``, three 3x3 conv-norm-ReLUs 3 -> 32 (stride 2) -> 32 -> 64 (stem.0, .3, .6 the convs),
    then a 3x3 stride-2 max-pool rounding down: (B, 3, H, W) -> (B, 64, floor((ceil(H/2) - 1)/2) + 1, ...)."""
    layers = []
    for cin, cout, stride in ((3, 32, 2), (32, 32, 1), (32, 64, 1)):
        layers += [nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False), norm_layer(cout),
                   act_layer()]
    return OrderedDict(stem=nn.Sequential(*layers), maxpool=nn.MaxPool2d(kernel_size=3, stride=2, padding=1)), 64


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, dilated), 1x1 expand by 4, plus the identity or a projection."""

    expansion = 4

    def __init__(self, in_channels, channels, norm_layer, act_layer=InPlaceReLU, stride=1, dilation=1,
                 downsample=None):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=1, bias=False)
        self.bn1 = norm_layer(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = norm_layer(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, kernel_size=1, bias=False)
        self.bn3 = norm_layer(out_channels)
        self.relu = act_layer()
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_layer(in_channels, channels, blocks, norm_layer, act_layer=InPlaceReLU, stride=1, dilations=(1,),
               contract_dilation=False):
    """``blocks`` bottlenecks in_channels -> 4 * channels; block i is dilated by dilations[i % len(dilations)],
    except that with ``contract_dilation`` a dilated first block takes half its dilation."""
    out_channels = channels * Bottleneck.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                                   norm_layer(out_channels))
    first_dilation = dilations[0] // 2 if contract_dilation and dilations[0] > 1 else dilations[0]
    first = Bottleneck(in_channels, channels, norm_layer, act_layer, stride, first_dilation, downsample)
    rest = [Bottleneck(out_channels, channels, norm_layer, act_layer, dilation=dilations[i % len(dilations)])
            for i in range(1, blocks)]
    return nn.Sequential(first, *rest)


class ResNet(nn.Module):
    """Deep-stem dilated ResNet: (B, 3, H, W) -> layer3 (B, 1024, h, w) and layer4 (B, 2048, h, w).

    ``layers``: bottlenecks per stage (DEPTHS[50] or DEPTHS[101]); ``stem``: mit_stem or v1c_stem,
    whose modules are attributes of the ResNet under their checkpoint names. h, w are about H/8, W/8,
    through the stride-2 stem conv, the max-pool and layer2's stride-2 conv. ``multi_grid`` multiplies
    layer4's dilation block by block; ``contract_dilation`` halves the dilation of the first block of
    layer3 and layer4 (mmsegmentation's). Every norm is norm_layer(C) followed by act_layer() (a ReLU),
    as in torchvision and timm.
    With ``memory_efficient``, a forward that records gradients keeps only the inputs of the stem
    and of each bottleneck (of each pair in layer3) and recomputes the rest in backward
    (sync_batchnorm.recompute).
    """

    def __init__(self, layers=DEPTHS[101], norm_layer=nn.BatchNorm2d, multi_grid=(1, 1, 1),
                 act_layer=InPlaceReLU, memory_efficient=False, stem=mit_stem, contract_dilation=False):
        super().__init__()
        self.memory_efficient = memory_efficient
        stem_modules, stem_channels = stem(norm_layer, act_layer)
        for name, module in stem_modules.items():
            self.add_module(name, module)
        self.stem_names = tuple(stem_modules)
        self.layer1 = make_layer(stem_channels, 64, layers[0], norm_layer, act_layer)
        self.layer2 = make_layer(256, 128, layers[1], norm_layer, act_layer, stride=2)
        self.layer3 = make_layer(512, 256, layers[2], norm_layer, act_layer, dilations=(2,),
                                 contract_dilation=contract_dilation)
        self.layer4 = make_layer(1024, 512, layers[3], norm_layer, act_layer,
                                 dilations=tuple(4 * g for g in multi_grid), contract_dilation=contract_dilation)

        self._init_weights()

    def _init_weights(self):
        """He-normal convolutions and, as in Goyal et al. (2017), a zero scale on the last norm of
        every residual branch, so that a network trained from scratch starts as a shallow one.
        Pretrained weights loaded afterwards replace all of it."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():
            if isinstance(module, Bottleneck):
                nn.init.zeros_(module.bn3.weight)

    def recomputes(self):
        """Whether this forward runs in checkpointed segments: memory_efficient and recording gradients."""
        return self.memory_efficient and torch.is_grad_enabled()

    def segment(self, function, x):
        """function(x), as a checkpointed segment when recomputes()."""
        return checkpoint(function, x) if self.recomputes() else function(x)

    def stage(self, layer, x, blocks_per_segment=1):
        """A residual stage (an nn.Sequential of bottlenecks); when recomputes(), a segment per
        ``blocks_per_segment`` consecutive bottlenecks."""
        if not self.recomputes():
            return layer(x)
        for start in range(0, len(layer), blocks_per_segment):
            x = checkpoint(layer[start:start + blocks_per_segment], x)
        return x

    def forward_stem(self, x):
        """(B, 3, H, W) -> (B, 128 or 64, H/4, W/4): the stem's modules in their order."""
        for name in self.stem_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x):
        x = self.segment(self.forward_stem, x)  # (B, 128 or 64, H/4, W/4)
        x = self.stage(self.layer1, x)  # (B, 256, H/4, W/4)
        x = self.stage(self.layer2, x)  # (B, 512, H/8, W/8)
        # Pairs halve the 1024-channel inputs kept for layer3 at the cost of a second block's
        # activations in its backward: the lower peak at 257x257 (docs/benchmarks.md, Memory-efficient training).
        c3 = self.stage(self.layer3, x, blocks_per_segment=2)  # (B, 1024, H/8, W/8)
        c4 = self.stage(self.layer4, c3)  # (B, 2048, H/8, W/8)
        return c3, c4
