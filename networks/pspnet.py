"""PSPNet on the dilated ResNet-101 of CCNet (Zhao et al., CVPR 2017)."""
import torch.nn as nn

from networks.psp import PSPModule
from networks.segmentation import segmentation_model


def Seg_Model(num_classes, criterion=None, pretrained_model=None, recurrence=0, norm_layer=None):
    """PSPNet for ``num_classes`` classes: [main, dsn] logits at 1/8 resolution, or the loss.

    ``recurrence`` is accepted so that every model builds from the same arguments; PSPNet has
    no attention to repeat and does not use it.
    """
    return segmentation_model(
        lambda norm_layer: nn.Sequential(PSPModule(2048, norm_layer), nn.Conv2d(512, num_classes, kernel_size=1)),
        num_classes, criterion, pretrained_model, norm_layer)
