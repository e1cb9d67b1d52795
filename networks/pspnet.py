"""PSPNet on the dilated ResNet-50 or -101 of CCNet.

Zhao et al., "Pyramid Scene Parsing Network" (CVPR 2017): average-pool the features to 1x1,
2x2, 3x3 and 6x6 grids, reduce each, upsample back and fuse them with the features.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.segmentation import conv_bn_relu, segmentation_model


class PSPModule(nn.Module):
    """(B, in_channels, h, w) -> (B, out_channels, h, w)."""

    def __init__(self, in_channels, norm_act, out_channels=512, sizes=(1, 2, 3, 6)):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(size), *conv_bn_relu(in_channels, out_channels, 1, norm_act))
            for size in sizes)
        self.bottleneck = nn.Sequential(
            *conv_bn_relu(in_channels + len(sizes) * out_channels, out_channels, 3, norm_act),
            nn.Dropout2d(0.1))

    def forward(self, x):
        size = x.shape[2:]
        priors = [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=True)
                  for stage in self.stages]  # each (B, out, h, w)
        return self.bottleneck(torch.cat(priors + [x], dim=1))


def Seg_Model(num_classes, criterion=None, pretrained_model=None, recurrence=0, norm_layer=None, norm="syncbn",
              memory_efficient=False, depth=101):
    """PSPNet for ``num_classes`` classes: [main, dsn] logits at 1/8 resolution, or the loss.

    ``recurrence`` is accepted so that every model builds from the same arguments; PSPNet has
    no attention to repeat and does not use it.
    """
    return segmentation_model(
        lambda layout: nn.Sequential(PSPModule(2048, layout.norm_act), nn.Conv2d(512, num_classes, kernel_size=1)),
        num_classes, criterion, pretrained_model, norm_layer, norm, memory_efficient, depth)
