"""Semantic-segmentation scores from a confusion matrix: per-class IoU, mIoU and pixel accuracy.

IoU follows the Cityscapes benchmark (Cordts et al., "The Cityscapes Dataset for Semantic Urban
Scene Understanding", CVPR 2016): a class absent from both the labels and the predictions has no
IoU (None) and is left out of the mean.
"""
import torch

from utils.runtime import all_reduce_sum


class ConfusionMatrix:
    """Pixel counts of (label, prediction) pairs; ``matrix[i, j]`` = pixels labelled i predicted j."""

    def __init__(self, num_classes, ignore_index=255, device="cpu"):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, prediction, label):
        """Count one batch; prediction and label are integer tensors of the same shape, e.g. (N, H, W)."""
        if prediction.shape != label.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and label {tuple(label.shape)} differ in shape")
        k = self.num_classes
        label = label.to(self.matrix.device, torch.int64)
        prediction = prediction.to(self.matrix.device, torch.int64)
        keep = label != self.ignore_index
        label, prediction = label[keep], prediction[keep]  # (P,), (P,): labelled pixels only
        if label.numel() and (label.min() < 0 or label.max() >= k):
            raise ValueError(f"label values must be in [0, {k}) or {self.ignore_index}, "
                             f"found {int(label.min())}..{int(label.max())}")
        if prediction.numel() and (prediction.min() < 0 or prediction.max() >= k):
            raise ValueError(f"prediction values must be in [0, {k})")
        counts = torch.bincount(label * k + prediction, minlength=k * k)  # (k*k,)
        self.matrix += counts.view(k, k)

    def all_reduce(self):
        """Sum the matrix over all processes of a torch.distributed run (a no-op otherwise)."""
        all_reduce_sum(self.matrix)
        return self

    def iou(self):
        """Per-class intersection over union as a list of floats, None for a class seen nowhere."""
        m = self.matrix.double()
        tp = m.diagonal()
        union = m.sum(0) + m.sum(1) - tp  # (k,): labelled + predicted - both
        return [None if u == 0 else float(t / u) for t, u in zip(tp.tolist(), union.tolist())]

    def mean_iou(self):
        """Mean of the defined per-class IoUs (None when no class is defined)."""
        values = [v for v in self.iou() if v is not None]
        return sum(values) / len(values) if values else None

    def pixel_accuracy(self):
        """Fraction of labelled pixels predicted right (None before any pixel is counted)."""
        total = int(self.matrix.sum())
        return int(self.matrix.diagonal().sum()) / total if total else None
