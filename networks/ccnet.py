"""CCNet: dilated ResNet-50 or -101 with the recurrent criss-cross attention (RCCA) head.

Huang et al., "CCNet: Criss-Cross Attention for Semantic Segmentation" (ICCV 2019): reduce the
backbone features, apply one CrissCrossAttention ``recurrence`` times with shared weights (two
passes let every position reach every other), then classify the features concatenated back
with the backbone's.
"""
import torch
import torch.nn as nn

from CC import CrissCrossAttention
from networks.segmentation import classifier, conv_bn_relu, segmentation_model


class RCCAModule(nn.Module):
    """(B, in_channels, h, w) -> (B, num_classes, h, w) logits.

    With recurrence 0 the attention is built but frozen (requires_grad False): its forward never
    runs, and DistributedDataParallel would wait for gradients of trainable parameters that get
    none. Its tensors stay in the state_dict, so checkpoints keep the published keys and one
    trained with recurrence 0 loads for recurrence 2, where gamma 0 makes the attention the identity.
    """

    def __init__(self, in_channels, num_classes, norm_act, recurrence=2):
        super().__init__()
        inter_channels = in_channels // 4
        self.recurrence = recurrence
        self.conva = nn.Sequential(*conv_bn_relu(in_channels, inter_channels, 3, norm_act))
        self.cca = CrissCrossAttention(inter_channels).requires_grad_(recurrence > 0)
        self.convb = nn.Sequential(*conv_bn_relu(inter_channels, inter_channels, 3, norm_act))
        self.bottleneck = classifier(in_channels + inter_channels, num_classes, norm_act)

    def forward(self, x):
        out = self.conva(x)  # (B, in/4, h, w)
        for _ in range(self.recurrence):
            out = self.cca(out)
        out = self.convb(out)
        return self.bottleneck(torch.cat([x, out], dim=1))  # (B, K, h, w)


def Seg_Model(num_classes, criterion=None, pretrained_model=None, recurrence=0, norm_layer=None, norm="syncbn",
              memory_efficient=False, depth=101):
    """CCNet for ``num_classes`` classes, the attention applied ``recurrence`` times.

    (B, 3, H, W) -> [main, dsn] logits (B, num_classes, h, w) at 1/8 resolution, or the
    criterion's loss when a criterion and labels are given. ``norm`` names the layout of
    networks.norms ("syncbn", the seed's; "inplace-abn", the official model's).
    """
    return segmentation_model(lambda norm_act: RCCAModule(2048, num_classes, norm_act, recurrence),
                              num_classes, criterion, pretrained_model, norm_layer, norm, memory_efficient, depth)
