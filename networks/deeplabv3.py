"""DeepLabv3 (ASPP head) on the dilated ResNet-50 or -101 of CCNet.

Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation" (2017): atrous spatial
pyramid pooling, an image-level pooled branch, a 1x1 branch and three 3x3 branches at growing
dilations, fused.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.segmentation import conv_bn_relu, segmentation_model


class ASPPModule(nn.Module):
    """(B, in_channels, h, w) -> (B, out_channels, h, w)."""

    def __init__(self, in_channels, norm_act, inner_channels=256, out_channels=512, dilations=(12, 24, 36)):
        super().__init__()
        self.conv1 = nn.Sequential(nn.AdaptiveAvgPool2d(1), *conv_bn_relu(in_channels, inner_channels, 1, norm_act))
        self.conv2 = nn.Sequential(*conv_bn_relu(in_channels, inner_channels, 1, norm_act))
        self.conv3 = nn.Sequential(*conv_bn_relu(in_channels, inner_channels, 3, norm_act, dilation=dilations[0]))
        self.conv4 = nn.Sequential(*conv_bn_relu(in_channels, inner_channels, 3, norm_act, dilation=dilations[1]))
        self.conv5 = nn.Sequential(*conv_bn_relu(in_channels, inner_channels, 3, norm_act, dilation=dilations[2]))
        self.bottleneck = nn.Sequential(*conv_bn_relu(5 * inner_channels, out_channels, 1, norm_act),
                                        nn.Dropout2d(0.1))

    def forward(self, x):
        pooled = F.interpolate(self.conv1(x), size=x.shape[2:], mode="bilinear", align_corners=True)
        branches = [pooled, self.conv2(x), self.conv3(x), self.conv4(x), self.conv5(x)]  # each (B, inner, h, w)
        return self.bottleneck(torch.cat(branches, dim=1))


def Seg_Model(num_classes, criterion=None, pretrained_model=None, recurrence=0, norm_layer=None, norm="syncbn",
              memory_efficient=False, depth=101):
    """DeepLabv3 for ``num_classes`` classes: [main, dsn] logits at 1/8 resolution, or the loss.

    ``recurrence`` is accepted so that every model builds from the same arguments; DeepLabv3
    has no attention to repeat and does not use it.
    """
    return segmentation_model(
        lambda layout: nn.Sequential(ASPPModule(2048, layout.norm_act), nn.Conv2d(512, num_classes, kernel_size=1)),
        num_classes, criterion, pretrained_model, norm_layer, norm, memory_efficient, depth)
