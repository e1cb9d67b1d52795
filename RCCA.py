"""Recurrent criss-cross attention (RCCA): CCNet's attention head without its classifier.

Huang et al., "CCNet: Criss-Cross Attention for Semantic Segmentation" (ICCV 2019), Sec. 3.2: a
3x3 convolution reduces the features, one CrissCrossAttention is applied ``recurrence`` times with
shared weights (after two passes every position has reached every other), and a second 3x3
convolution follows. A block for any network: the norm and activation layers are passed in.
"""
import torch.nn as nn

from CC import CrissCrossAttention

__all__ = ["RecurrentCrissCrossAttention"]


def conv_norm_act(in_channels, out_channels, norm_layer, act_layer):
    """3x3 conv (no bias), norm_layer(out_channels), then act_layer() unless it is None:
    (B, in, H, W) -> (B, out, H, W)."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False), norm_layer(out_channels)]
    return nn.Sequential(*layers, *([act_layer()] if act_layer is not None else []))


class RecurrentCrissCrossAttention(nn.Module):
    """(B, in_channels, H, W) -> (B, channels, H, W): conva, ``recurrence`` passes of one
    CrissCrossAttention, convb.

    channels defaults to in_channels // 4, as in CCNet (2048 -> 512). norm_layer(C) builds each
    norm and act_layer() the activation after it; act_layer None suits norms that hold their own
    activation (InPlace-ABN). Parameter names are those of CCNet's checkpoints: ``conva.0``,
    ``conva.1``, ``cca.*``, ``convb.0``, ``convb.1``. With recurrence 0 the attention is built but
    frozen (requires_grad False): its forward never runs, so DistributedDataParallel would wait for
    gradients it never gets; its tensors stay in the state_dict.
    """

    def __init__(self, in_channels, channels=None, recurrence=2, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU):
        super().__init__()
        channels = channels or in_channels // 4
        self.recurrence = recurrence
        self.conva = conv_norm_act(in_channels, channels, norm_layer, act_layer)
        self.cca = CrissCrossAttention(channels).requires_grad_(recurrence > 0)
        self.convb = conv_norm_act(channels, channels, norm_layer, act_layer)

    def forward(self, x):
        out = self.conva(x)  # (B, channels, H, W)
        for _ in range(self.recurrence):
            out = self.cca(out)
        return self.convb(out)
