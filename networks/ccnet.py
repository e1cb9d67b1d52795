"""CCNet: dilated ResNet-50 or -101 with the recurrent criss-cross attention (RCCA) head.

Huang et al., "CCNet: Criss-Cross Attention for Semantic Segmentation" (ICCV 2019): reduce the
backbone features, apply one CrissCrossAttention ``recurrence`` times with shared weights (two
passes let every position reach every other), then classify the features concatenated back
with the backbone's.
"""
import torch

from networks.segmentation import classifier, segmentation_model
from RCCA import RecurrentCrissCrossAttention


class RCCAModule(RecurrentCrissCrossAttention):
    """(B, in_channels, h, w) -> (B, num_classes, h, w) logits: RCCA.RecurrentCrissCrossAttention
    (conva, cca, convb) in the norm layout ``layout`` (networks.norms), then the classifier
    ``bottleneck`` on [x, its output]."""

    def __init__(self, in_channels, num_classes, layout, recurrence=2):
        channels = in_channels // 4
        super().__init__(in_channels, channels, recurrence, layout.norm_layer, layout.head_act_layer)
        self.bottleneck = classifier(in_channels + channels, num_classes, layout.norm_act)

    def forward(self, x):
        return self.bottleneck(torch.cat([x, super().forward(x)], dim=1))  # (B, K, h, w)


def Seg_Model(num_classes, criterion=None, pretrained_model=None, recurrence=0, norm_layer=None, norm="syncbn",
              memory_efficient=False, depth=101):
    """CCNet for ``num_classes`` classes, the attention applied ``recurrence`` times.

    (B, 3, H, W) -> [main, dsn] logits (B, num_classes, h, w) at 1/8 resolution, or the
    criterion's loss when a criterion and labels are given. ``norm`` names the layout of
    networks.norms ("syncbn", upstream's; "inplace-abn", the official model's).
    """
    return segmentation_model(lambda layout: RCCAModule(2048, num_classes, layout, recurrence),
                              num_classes, criterion, pretrained_model, norm_layer, norm, memory_efficient, depth)
