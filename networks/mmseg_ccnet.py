"""CCNet as mmsegmentation builds it (its configs/ccnet), so that its model zoo files load as they are.

Huang et al., "CCNet: Criss-Cross Attention for Semantic Segmentation" (ICCV 2019), in the layout of
mmsegmentation's EncoderDecoder: a ResNetV1c backbone (networks.resnet.v1c_stem, the first block of
layer3 and layer4 at half their dilation), a CCHead on layer4 and an FCN auxiliary head of 256
channels on layer3, with mmsegmentation's module names, so that the state_dict holds exactly the keys
of its checkpoints (``backbone.stem.0.weight`` ... ``decode_head.cca.gamma.scale`` ...). The network
takes what the rest of this project feeds (BGR minus utils.image_mean.IMG_MEAN) and turns it into
mmsegmentation's input itself: RGB, minus MMSEG_MEAN, over MMSEG_STD.
"""
from collections import OrderedDict

import torch
import torch.nn as nn

from CC import CrissCrossAttention
from networks.norms import make_layout
from networks.resnet import DEPTHS, ResNet, v1c_stem
from networks.segmentation import check_memory_efficient
from utils.checkpoint import load_model
from utils.image_mean import IMG_MEAN

MMSEG_MEAN = (123.675, 116.28, 103.53)  # RGB, the data_preprocessor of every mmsegmentation config
MMSEG_STD = (58.395, 57.12, 57.375)
GAMMA = "gamma"
MMCV_GAMMA = "gamma.scale"


def _gamma_to_mmcv(module, state_dict, prefix, local_metadata):
    """state_dict post-hook: our (1,) ``gamma`` as mmcv's 0-d ``gamma.scale``."""
    state_dict[prefix + MMCV_GAMMA] = state_dict.pop(prefix + GAMMA).reshape(())


def _gamma_from_mmcv(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    """load_state_dict pre-hook: mmcv's 0-d ``gamma.scale`` as our (1,) ``gamma``."""
    if prefix + MMCV_GAMMA in state_dict:
        state_dict[prefix + GAMMA] = state_dict.pop(prefix + MMCV_GAMMA).reshape(1)


class ScaleCrissCrossAttention(CrissCrossAttention):
    """CrissCrossAttention (CC.py) whose state_dict holds gamma as mmcv's does (its ``Scale`` module):
    a 0-d tensor at ``gamma.scale``. The parameter itself is CC.py's (1,) gamma."""

    def __init__(self, in_dim):
        super().__init__(in_dim)
        self.register_state_dict_post_hook(_gamma_to_mmcv)
        self.register_load_state_dict_pre_hook(_gamma_from_mmcv)


def conv_module(in_channels, out_channels, layout):
    """mmcv's ConvModule as mmsegmentation's heads use it: a 3x3 conv without bias, a norm and a ReLU,
    named conv, bn, activate: (B, in, H, W) -> (B, out, H, W)."""
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                                     bn=layout.norm(out_channels), activate=layout.act()))


class FCNHead(nn.Module):
    """mmsegmentation's FCNHead: ``num_convs`` conv modules, Dropout2d(0.1), a 1x1 classifier
    ``conv_seg``: (B, in_channels, h, w) -> (B, num_classes, h, w).

    The classifier and the dropout are registered first, as mmsegmentation's decode heads register
    them, so that the state_dict lists its keys in mmsegmentation's order.
    """

    def __init__(self, in_channels, channels, num_classes, layout, num_convs=1):
        super().__init__()
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.dropout = nn.Dropout2d(0.1)
        self.convs = nn.Sequential(*(conv_module(in_channels if i == 0 else channels, channels, layout)
                                     for i in range(num_convs)))

    def classify(self, x):
        """(B, channels, h, w) -> (B, num_classes, h, w): dropout, then the classifier."""
        return self.conv_seg(self.dropout(x))

    def forward(self, x):
        return self.classify(self.convs(x))


class CCHead(FCNHead):
    """mmsegmentation's CCHead: convs.0 reduces 2048 -> 512 channels, the criss-cross attention runs
    ``recurrence`` times, convs.1, then conv_cat over [backbone features, attention features] and the
    classifier: (B, in_channels, h, w) -> (B, num_classes, h, w).

    With recurrence 0 the attention is frozen, as RCCA.RecurrentCrissCrossAttention explains.
    """

    def __init__(self, in_channels, channels, num_classes, layout, recurrence=2):
        super().__init__(in_channels, channels, num_classes, layout, num_convs=2)
        self.conv_cat = conv_module(in_channels + channels, channels, layout)
        self.cca = ScaleCrissCrossAttention(channels).requires_grad_(recurrence > 0)
        self.recurrence = recurrence

    def forward(self, x):
        out = self.convs[0](x)  # (B, 512, h, w)
        for _ in range(self.recurrence):
            out = self.cca(out)
        out = self.convs[1](out)
        return self.classify(self.conv_cat(torch.cat([x, out], dim=1)))  # (B, K, h, w)


def input_transform():
    """(scale, shift), each (1, 3, 1, 1) float64, with which x * scale + shift turns our input (BGR
    minus IMG_MEAN) flipped to RGB into mmsegmentation's: (RGB - MMSEG_MEAN) / MMSEG_STD."""
    mean, std, ours = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1)
                       for v in (MMSEG_MEAN, MMSEG_STD, IMG_MEAN[::-1]))
    return 1 / std, (ours - mean) / std


class EncoderDecoder(nn.Module):
    """CCNet in mmsegmentation's layout: (B, 3, H, W) BGR minus IMG_MEAN -> [decode logits, auxiliary
    logits], each (B, K, h, w) at output stride 8, or criterion([...], labels) with a criterion and labels.

    ``align_corners`` is how the logits are resized to the image (utils.inference.predict_whole): True
    for mmsegmentation's Cityscapes 769x769 models, False for its others. With ``memory_efficient``
    the backbone and the heads run as checkpointed segments (networks.resnet.ResNet).
    """

    def __init__(self, num_classes, layout, depth=101, recurrence=2, criterion=None, align_corners=False,
                 memory_efficient=False):
        super().__init__()
        self.backbone = ResNet(DEPTHS[depth], layout.norm, act_layer=layout.act, memory_efficient=memory_efficient,
                               stem=v1c_stem, contract_dilation=True)
        self.decode_head = CCHead(2048, 512, num_classes, layout, recurrence)
        self.auxiliary_head = FCNHead(1024, 256, num_classes, layout)
        self.criterion = criterion
        self.align_corners = align_corners
        # Kept in float64 and rounded to the input's dtype in forward, so a float64 run is exact to float64.
        scale, shift = input_transform()
        self.register_buffer("input_scale", scale, persistent=False)
        self.register_buffer("input_shift", shift, persistent=False)

    def classifiers(self):
        """The last convolution of each head (what --not-restore-last re-initialises)."""
        return [self.decode_head.conv_seg, self.auxiliary_head.conv_seg]

    def forward(self, x, labels=None):
        x = x.flip(1) * self.input_scale.to(x.dtype) + self.input_shift.to(x.dtype)  # (B, 3, H, W) normalized RGB
        c3, c4 = self.backbone(x)
        outs = [self.backbone.segment(self.decode_head, c4), self.backbone.segment(self.auxiliary_head, c3)]
        if self.criterion is not None and labels is not None:
            return self.criterion(outs, labels)
        return outs


def backbone_keys(state):
    """A state_dict in the network's key names: an ImageNet ResNetV1c file (mmcv's open-mmlab://resnet50_v1c,
    keys ``stem.0.weight`` ...) gets the ``backbone.`` prefix and loses its ``fc`` classifier; others pass."""
    if "stem.0.weight" not in state:
        return state
    return {f"backbone.{key}": value for key, value in state.items() if not key.startswith("fc.")}


def Seg_Model(num_classes, criterion=None, pretrained_model=None, recurrence=0, norm_layer=None, norm="mmseg",
              memory_efficient=False, depth=101):
    """CCNet in mmsegmentation's layout for ``num_classes`` classes on a ResNetV1c of ``depth`` (50 or 101).

    (B, 3, H, W) -> [decode, auxiliary] logits (B, num_classes, h, w) at 1/8 resolution, or the loss.
    norm_layer None means SynchronizedBatchNorm2d; ``pretrained_model`` (a state_dict: a zoo file's or an
    ImageNet ResNetV1c's) is loaded non-strictly.
    """
    layout = make_layout(norm, norm_layer)
    check_memory_efficient(layout, memory_efficient)
    model = EncoderDecoder(num_classes, layout, depth, recurrence, criterion, memory_efficient=memory_efficient)
    if pretrained_model is not None:
        load_model(model, backbone_keys(pretrained_model))
    return model
