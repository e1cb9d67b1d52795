"""Training losses of CCNet: OHEM cross entropy and the deeply supervised (DSN) criteria.

OHEM follows Shrivastava et al., "Training Region-based Object Detectors with Online Hard Example
Mining" (CVPR 2016), in the pixel-wise form CCNet trains with: only the pixels whose predicted
probability of the true class is at most a threshold contribute to the loss. The DSN criteria add
0.4 x the loss of the auxiliary head on ResNet stage 3 (Zhao et al., "Pyramid Scene Parsing
Network", CVPR 2017), as CCNet (Huang et al., ICCV 2019) trains.
"""
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["OhemCrossEntropy2d", "zoom_nearest", "DSNLoss", "CriterionDSN", "CriterionOhemDSN", "cross_entropy"]

DSN_WEIGHT = 0.4


def _zoom_index(size_in, size_out, device):
    """Source index of each output position when resampling with aligned corners, rounded to nearest."""
    step = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    index = torch.floor(torch.arange(size_out, dtype=torch.float64) * step + 0.5).long()
    return index.clamp_(max=size_in - 1).to(device)


def zoom_nearest(label, size):
    """(B, H, W) -> (B, h, w) nearest-neighbour resampling with aligned corners (as scipy's zoom, order 0)."""
    rows = _zoom_index(label.shape[1], size[0], label.device)
    cols = _zoom_index(label.shape[2], size[1], label.device)
    return label[:, rows][:, :, cols]


class OhemCrossEntropy2d(nn.Module):
    """Cross entropy over the valid pixels whose true-class probability is <= a threshold.

    threshold = max(thresh, the min_kept-th smallest true-class probability), the latter found
    on the prediction and labels downsampled by ``factor`` (with min_kept // factor**2), over the
    whole batch; when min_kept reaches the number of valid downsampled pixels every valid pixel
    is kept. predict: (B, C, H, W) logits; target: (B, H, W) class ids, float or long,
    ``ignore_label`` ignored. Returns the mean over kept pixels, 0 when none is kept.
    """

    def __init__(self, ignore_label=255, thresh=0.7, min_kept=100000, factor=8):
        super().__init__()
        self.ignore_label = ignore_label
        self.thresh = float(thresh)
        self.min_kept = int(min_kept)
        self.factor = factor

    def _true_class_prob(self, prob, target):
        """prob (B, C, H, W), target (B, H, W) -> (B, H, W) probability of the target class (2 where ignored)."""
        valid = target != self.ignore_label
        p = prob.gather(1, torch.where(valid, target, 0).unsqueeze(1)).squeeze(1)
        return torch.where(valid, p, torch.full_like(p, 2.0)), valid

    def threshold(self, prob, target):
        """The probability threshold (a 0-dim tensor) for prob (B, C, H, W) and target (B, H, W) long."""
        h, w = prob.shape[2:]
        size = (round(h / self.factor), round(w / self.factor))
        small_prob = F.interpolate(prob, size=size, mode="bilinear", align_corners=True)
        p, valid = self._true_class_prob(small_prob, zoom_nearest(target, size))
        min_kept = self.min_kept // (self.factor * self.factor)
        thresh = torch.tensor(self.thresh, dtype=p.dtype, device=p.device)
        if min_kept >= p.numel():
            return torch.ones_like(thresh)
        if min_kept > 0:
            # Ignored pixels hold 2, above every probability, so the k-th smallest is a valid one
            # whenever min_kept < number of valid pixels; otherwise every valid pixel is kept.
            kth = p.flatten().kthvalue(min_kept).values
            thresh = torch.where(valid.sum() <= min_kept, torch.ones_like(thresh), torch.maximum(thresh, kth))
        return torch.where(valid.any(), thresh, torch.ones_like(thresh))

    def forward(self, predict, target):
        target = target.long()
        prob = torch.softmax(predict.detach().float(), dim=1)  # (B, C, H, W)
        p, valid = self._true_class_prob(prob, target)
        kept = valid & (p <= self.threshold(prob, target))
        loss = F.cross_entropy(predict, torch.where(kept, target, self.ignore_label),
                               ignore_index=self.ignore_label, reduction="sum")
        return loss / kept.sum().clamp(min=1)


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
