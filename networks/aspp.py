"""Atrous spatial pyramid pooling, the head of DeepLabv3.

Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation" (2017): an
image-level pooled branch, a 1x1 branch and three 3x3 branches at growing dilations, fused.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.layers import conv_bn_relu


class ASPPModule(nn.Module):
    """(B, in_channels, h, w) -> (B, out_channels, h, w)."""

    def __init__(self, in_channels, norm_layer, inner_channels=256, out_channels=512, dilations=(12, 24, 36)):
        super().__init__()
        self.conv1 = nn.Sequential(nn.AdaptiveAvgPool2d(1), *conv_bn_relu(in_channels, inner_channels, 1, norm_layer))
        self.conv2 = nn.Sequential(*conv_bn_relu(in_channels, inner_channels, 1, norm_layer))
        self.conv3 = nn.Sequential(*conv_bn_relu(in_channels, inner_channels, 3, norm_layer, dilation=dilations[0]))
        self.conv4 = nn.Sequential(*conv_bn_relu(in_channels, inner_channels, 3, norm_layer, dilation=dilations[1]))
        self.conv5 = nn.Sequential(*conv_bn_relu(in_channels, inner_channels, 3, norm_layer, dilation=dilations[2]))
        self.bottleneck = nn.Sequential(*conv_bn_relu(5 * inner_channels, out_channels, 1, norm_layer),
                                        nn.Dropout2d(0.1))

    def forward(self, x):
        pooled = F.interpolate(self.conv1(x), size=x.shape[2:], mode="bilinear", align_corners=True)
        branches = [pooled, self.conv2(x), self.conv3(x), self.conv4(x), self.conv5(x)]  # each (B, inner, h, w)
        return self.bottleneck(torch.cat(branches, dim=1))
