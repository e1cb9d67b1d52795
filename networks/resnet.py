"""The dilated ResNet-101 backbone of CCNet, PSPNet and DeepLabv3 (output stride 8).

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), with the deep stem of
three 3x3 convs (the MIT ImageNet weights ``resnet101-imagenet.pth`` use it) and layer3/layer4
dilated by 2 and 4 instead of strided, as in Chen et al., "Rethinking Atrous Convolution" (2017).
"""
import functools

import torch
import torch.nn as nn

from sync_batchnorm.recompute import checkpoint

InPlaceReLU = functools.partial(nn.ReLU, inplace=True)


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


def make_layer(in_channels, channels, blocks, norm_layer, act_layer=InPlaceReLU, stride=1, dilations=(1,)):
    """``blocks`` bottlenecks in_channels -> 4 * channels; block i is dilated by dilations[i % len(dilations)]."""
    out_channels = channels * Bottleneck.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                                   norm_layer(out_channels))
    first = Bottleneck(in_channels, channels, norm_layer, act_layer, stride, dilations[0], downsample)
    rest = [Bottleneck(out_channels, channels, norm_layer, act_layer, dilation=dilations[i % len(dilations)])
            for i in range(1, blocks)]
    return nn.Sequential(first, *rest)


class ResNet(nn.Module):
    """Deep-stem dilated ResNet: (B, 3, H, W) -> layer3 (B, 1024, h, w) and layer4 (B, 2048, h, w).

    h, w are H/8, W/8 rounded up through the stride-2 stem conv, the ceil-mode max-pool and
    layer2's stride-2 conv. ``multi_grid`` multiplies layer4's dilation block by block. Every norm is
    norm_layer(C) followed by act_layer() (a ReLU), as in torchvision and timm.
    With ``memory_efficient``, a forward that records gradients keeps only the inputs of the stem
    and of each bottleneck (of each pair in layer3) and recomputes the rest in backward
    (sync_batchnorm.recompute).
    """

    def __init__(self, layers=(3, 4, 23, 3), norm_layer=nn.BatchNorm2d, multi_grid=(1, 1, 1),
                 act_layer=InPlaceReLU, memory_efficient=False):
        super().__init__()
        self.memory_efficient = memory_efficient
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = norm_layer(64)
        self.relu1 = act_layer()
        self.conv2 = nn.Conv2d(64, 64, kernel_size=3, padding=1, bias=False)
        self.bn2 = norm_layer(64)
        self.relu2 = act_layer()
        self.conv3 = nn.Conv2d(64, 128, kernel_size=3, padding=1, bias=False)
        self.bn3 = norm_layer(128)
        self.relu3 = act_layer()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        self.layer1 = make_layer(128, 64, layers[0], norm_layer, act_layer)
        self.layer2 = make_layer(256, 128, layers[1], norm_layer, act_layer, stride=2)
        self.layer3 = make_layer(512, 256, layers[2], norm_layer, act_layer, dilations=(2,))
        self.layer4 = make_layer(1024, 512, layers[3], norm_layer, act_layer,
                                 dilations=tuple(4 * g for g in multi_grid))

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

    def stem(self, x):
        """(B, 3, H, W) -> (B, 128, H/4, W/4): three conv-norm-ReLUs and the max-pool."""
        x = self.relu1(self.bn1(self.conv1(x)))  # (B, 64, H/2, W/2)
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))  # (B, 128, H/2, W/2)
        return self.maxpool(x)

    def forward(self, x):
        x = self.segment(self.stem, x)  # (B, 128, H/4, W/4)
        x = self.stage(self.layer1, x)  # (B, 256, H/4, W/4)
        x = self.stage(self.layer2, x)  # (B, 512, H/8, W/8)
        # Pairs halve the 1024-channel inputs kept for layer3 at the cost of a second block's
        # activations in its backward: the lower peak at 257x257 (docs/benchmarks.md, Memory-efficient training).
        c3 = self.stage(self.layer3, x, blocks_per_segment=2)  # (B, 1024, H/8, W/8)
        c4 = self.stage(self.layer4, c3)  # (B, 2048, H/8, W/8)
        return c3, c4
