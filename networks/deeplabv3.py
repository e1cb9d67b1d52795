"""DeepLabv3 (ASPP head) on the dilated ResNet-101 of CCNet (Chen et al., 2017)."""
import torch.nn as nn

from networks.aspp import ASPPModule
from networks.segmentation import segmentation_model


def Seg_Model(num_classes, criterion=None, pretrained_model=None, recurrence=0, norm_layer=None):
    """DeepLabv3 for ``num_classes`` classes: [main, dsn] logits at 1/8 resolution, or the loss.

    ``recurrence`` is accepted so that every model builds from the same arguments; DeepLabv3
    has no attention to repeat and does not use it.
    """
    return segmentation_model(
        lambda norm_layer: nn.Sequential(ASPPModule(2048, norm_layer), nn.Conv2d(512, num_classes, kernel_size=1)),
        num_classes, criterion, pretrained_model, norm_layer)
