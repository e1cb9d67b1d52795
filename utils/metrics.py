"""Semantic-segmentation scores from a confusion matrix: per-class IoU and accuracy, their means, pixel accuracy.

IoU follows the Cityscapes benchmark (Cordts et al., "The Cityscapes Dataset for Semantic Urban
Scene Understanding", CVPR 2016): a class absent from both the labels and the predictions has no
IoU (None) and is left out of the mean. A class's accuracy is its recall, the fraction of its
labelled pixels predicted as it (mmsegmentation's per-class "Acc"); a class never labelled has none.
"""
import torch

from utils.runtime import all_reduce_sum


def mean_of_defined(values):
    """Mean of the values that are not None (None when there are none)."""
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


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
        return mean_of_defined(self.iou())

    def class_accuracy(self):
        """Per-class accuracy (recall: diagonal / row sum) as a list of floats, None for a class never labelled."""
        m = self.matrix.double()
        return [None if n == 0 else float(t / n) for t, n in zip(m.diagonal().tolist(), m.sum(1).tolist())]

    def mean_accuracy(self):
        """Mean of the defined per-class accuracies (None when no class is labelled)."""
        return mean_of_defined(self.class_accuracy())

    def row_fractions(self):
        """(k, k) float64: each true class's pixels as fractions of its predictions (rows sum to 1, NaN rows
        for classes never labelled); the diagonal is the per-class accuracy."""
        m = self.matrix.double()
        return m / m.sum(1, keepdim=True)

    def pixel_accuracy(self):
        """Fraction of labelled pixels predicted right (None before any pixel is counted)."""
        total = int(self.matrix.sum())
        return int(self.matrix.diagonal().sum()) / total if total else None
