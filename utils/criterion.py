"""Deeply supervised (DSN) training losses of CCNet: the main head plus 0.4 x the auxiliary head.

The auxiliary (DSN) head on ResNet stage 3 follows Zhao et al., "Pyramid Scene Parsing
Network" (CVPR 2017); CCNet (Huang et al., ICCV 2019) trains with the same weighting.
"""
import functools

import torch.nn as nn
import torch.nn.functional as F

from utils.loss import OhemCrossEntropy2d

__all__ = ["DSNLoss", "CriterionDSN", "CriterionOhemDSN", "cross_entropy"]

DSN_WEIGHT = 0.4


def _upsample(logits, target):
    """(B, C, h, w) logits -> (B, C, H, W) at the target's (H, W), bilinear with aligned corners."""
    return F.interpolate(logits, size=target.shape[1:], mode="bilinear", align_corners=True)


def cross_entropy(logits, target, ignore_index=255):
    """Mean cross entropy over the labelled pixels; a finite 0 (zero gradient) when none is labelled.

    logits (B, C, H, W), target (B, H, W) long. torch's mean reduction divides by zero there.
    """
    loss = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return loss / (target != ignore_index).sum().clamp(min=1)


class DSNLoss(nn.Module):
    """main_loss(main logits) + 0.4 * cross entropy(dsn logits), both upsampled to the labels."""

    def __init__(self, main_loss, ignore_index):
        super().__init__()
        self.main_loss = main_loss
        self.ignore_index = ignore_index

    def forward(self, preds, target):
        """preds: [main (B, C, h, w), dsn (B, C, h', w')] logits; target: (B, H, W) labels."""
        target = target.long()
        main, dsn = preds[0], preds[1]
        aux = cross_entropy(_upsample(dsn, target), target, self.ignore_index)
        return self.main_loss(_upsample(main, target), target) + DSN_WEIGHT * aux


class CriterionDSN(DSNLoss):
    """Cross entropy on the main head + 0.4 x cross entropy on the DSN head."""

    def __init__(self, ignore_index=255):
        super().__init__(functools.partial(cross_entropy, ignore_index=ignore_index), ignore_index)


class CriterionOhemDSN(DSNLoss):
    """OHEM cross entropy on the main head + 0.4 x cross entropy on the DSN head."""

    def __init__(self, ignore_index=255, thresh=0.7, min_kept=100000):
        super().__init__(OhemCrossEntropy2d(ignore_index, thresh, min_kept), ignore_index)
