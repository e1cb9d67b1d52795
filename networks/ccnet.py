"""CCNet: dilated ResNet-101 with the recurrent criss-cross attention head (Huang et al., ICCV 2019)."""
from networks.rcca import RCCAModule
from networks.segmentation import segmentation_model


def Seg_Model(num_classes, criterion=None, pretrained_model=None, recurrence=0, norm_layer=None):
    """CCNet for ``num_classes`` classes, the attention applied ``recurrence`` times.

    (B, 3, H, W) -> [main, dsn] logits (B, num_classes, h, w) at 1/8 resolution, or the
    criterion's loss when a criterion and labels are given.
    """
    return segmentation_model(lambda norm_layer: RCCAModule(2048, num_classes, norm_layer, recurrence),
                              num_classes, criterion, pretrained_model, norm_layer)
