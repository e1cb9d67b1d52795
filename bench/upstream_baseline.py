"""Upstream's way of training and evaluating CCNet, rebuilt for side-by-side benchmarks.

What makes upstream (Serge-weihao/CCNet-Pure-Pytorch) slower than this project, kept on purpose:
- criss-cross attention through contiguous permuted copies and bmm, differentiated by autograd
  through every intermediate (references/upstream.py);
- OHEM on the host: softmax probabilities and labels copied to numpy, downsampled with
  scipy.ndimage.zoom, the threshold found with np.partition, the new target copied back;
- evaluation on the host: scipy zoom of the input, each tile's logits copied to numpy and
  accumulated in float64 there, the argmax taken there.
The weights and layer shapes are this project's, so both sides run the same network.
"""
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from CC import CrissCrossAttention  # noqa: E402
from references import upstream_criss_cross  # noqa: E402
from utils.losses import DSNLoss, OhemCrossEntropy2d  # noqa: E402

__all__ = ["UpstreamCrissCrossAttention", "UpstreamOhemCrossEntropy2d", "UpstreamCriterionOhemDSN", "to_upstream_style",
           "upstream_sliding_logits", "upstream_predict"]


class UpstreamCrissCrossAttention(CrissCrossAttention):
    """CrissCrossAttention's parameters, upstream's bmm/permute forward: (B, C, H, W) -> (B, C, H, W)."""

    def forward(self, x):
        return self.gamma * upstream_criss_cross(self.query_conv(x), self.key_conv(x), self.value_conv(x)) + x


class UpstreamOhemCrossEntropy2d(OhemCrossEntropy2d):
    """Upstream's OHEM cross entropy (utils.loss.OhemCrossEntropy2d's arguments), on the host.

    threshold = max(thresh, the min_kept // factor**2-th smallest true-class probability of the
    prediction and labels zoomed by 1 / factor), or 1 when that count reaches the valid pixels.
    predict: (B, C, H, W) logits; target: (B, H, W) long. Returns the mean cross entropy over the
    valid pixels whose true-class probability is <= threshold.
    """

    def _host_true_class_prob(self, prob, target):
        """prob (B, C, H, W), target (B, H, W) numpy -> (valid flat indices, their true-class probability)."""
        labels = target.ravel().astype(np.int32)
        valid = labels != self.ignore_label
        by_class = np.moveaxis(prob, 1, 0).reshape(prob.shape[1], -1)[:, valid]  # (C, n_valid), a host copy
        return np.flatnonzero(valid), by_class[labels[valid], np.arange(valid.sum())]

    def threshold(self, prob, target):
        """The probability threshold (a float) for host arrays prob (B, C, H, W) and target (B, H, W)."""
        f = self.factor
        small_prob = ndimage.zoom(prob, (1.0, 1.0, 1.0 / f, 1.0 / f), order=1)
        small_target = ndimage.zoom(target, (1.0, 1.0 / f, 1.0 / f), order=0)
        min_kept = self.min_kept // (f * f)
        _, p = self._host_true_class_prob(small_prob, small_target)
        if min_kept >= p.size:
            return 1.0
        if min_kept == 0:
            return self.thresh
        kth = np.partition(p, min_kept - 1)[min_kept - 1]
        return max(self.thresh, float(kth))

    def forward(self, predict, target):
        with torch.no_grad():
            prob = F.softmax(predict, dim=1).cpu().numpy()  # (B, C, H, W) on the host
        host_target = target.cpu().numpy()
        index, p = self._host_true_class_prob(prob, host_target)
        kept = index[p <= self.threshold(prob, host_target)]
        new_target = np.full(host_target.size, self.ignore_label, dtype=np.int64)
        new_target[kept] = host_target.ravel()[kept]
        new_target = torch.from_numpy(new_target.reshape(host_target.shape)).to(target.device)
        return F.cross_entropy(predict, new_target, ignore_index=self.ignore_label)


class UpstreamCriterionOhemDSN(DSNLoss):
    """Upstream's OHEM on the main head + 0.4 x cross entropy on the DSN head."""

    def __init__(self, ignore_index=255, thresh=0.7, min_kept=100000):
        super().__init__(UpstreamOhemCrossEntropy2d(ignore_index, thresh, min_kept), ignore_index)


def to_upstream_style(model, criterion=None):
    """Swap every CrissCrossAttention of ``model`` for an UpstreamCrissCrossAttention with the same weights,
    and its criterion for ``criterion`` when one is given. Works in place; returns the model."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is CrissCrossAttention:
                replacement = UpstreamCrissCrossAttention(child.value_conv.in_channels)
                replacement.to(device=child.gamma.device, dtype=child.gamma.dtype).load_state_dict(child.state_dict())
                setattr(parent, name, replacement.train(child.training))
    if criterion is not None:
        model.criterion = criterion
    return model


@torch.no_grad()
def upstream_sliding_logits(model, images, tile_size, num_classes):
    """Upstream evaluate.py's single-scale logits, accumulated on the host: (N, H, W, K) float64 numpy.

    images: (N, 3, H, W) float32 numpy. Tiles of tile_size (h, w) overlap by 1/3 (stride ceil(2/3) of
    the tile; upstream takes both strides from the tile height, the same for its square tiles), the
    last row and column shifted back to end at the border, padded with zeros at the bottom and right
    where the tile is larger than the image; each tile's logits are upsampled to the tile and averaged
    where tiles overlap. A tile the size of the image is upstream's whole-image mode. The model runs
    on the device of its parameters.
    """
    device = next(model.parameters()).device
    images = ndimage.zoom(images, (1.0, 1.0, 1.0, 1.0), order=1, prefilter=False)
    n, _, height, width = images.shape
    tile_h, tile_w = tile_size
    stride_h, stride_w = math.ceil(tile_h * 2 / 3), math.ceil(tile_w * 2 / 3)
    probs = np.zeros((n, height, width, num_classes))  # float64, as in upstream
    count = np.zeros((1, height, width, num_classes))
    for row in range(max(math.ceil((height - tile_h) / stride_h) + 1, 1)):
        for col in range(max(math.ceil((width - tile_w) / stride_w) + 1, 1)):
            y2, x2 = min(row * stride_h + tile_h, height), min(col * stride_w + tile_w, width)
            y1, x1 = max(y2 - tile_h, 0), max(x2 - tile_w, 0)
            tile = images[:, :, y1:y2, x1:x2]
            padded = np.pad(tile, ((0, 0), (0, 0), (0, tile_h - tile.shape[2]), (0, tile_w - tile.shape[3])))
            logits = model(torch.from_numpy(padded).to(device))[0]  # (N, K, h, w)
            logits = F.interpolate(logits, size=tile_size, mode="bilinear", align_corners=True)
            logits = logits.cpu().numpy().transpose(0, 2, 3, 1)  # (N, tile_h, tile_w, K)
            probs[:, y1:y2, x1:x2] += logits[:, :y2 - y1, :x2 - x1]
            count[:, y1:y2, x1:x2] += 1
    return probs / count


def upstream_predict(model, images, tile_size, num_classes):
    """Upstream evaluate.py's single-scale prediction: class ids (N, H, W) uint8 on the host."""
    return upstream_sliding_logits(model, images, tile_size, num_classes).argmax(axis=3).astype(np.uint8)
