"""Synchronized BatchNorm: batch statistics over the whole batch across replicas and processes.

In training mode the mean and variance are taken over every sample seen by all the replicas
of an nn.DataParallel wrapped by DataParallelWithCallback, or by all the processes of
torch.distributed, so the layer computes what one nn.BatchNorm would on the concatenated batch,
forward and backward. Outside both it is nn.BatchNorm. Statistics are kept in float32 (float64 for
double inputs) whatever the input dtype; the output has the input's dtype and memory format.
In a segment of sync_batchnorm.recompute.checkpoint, the recomputation normalizes with the
statistics of the forward: no second exchange and no second running-statistics update.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from sync_batchnorm.recompute import computed_once, recomputing
from sync_batchnorm.statistics import SynchronizedStatistics, local_stats

__all__ = ["SynchronizedBatchNorm1d", "SynchronizedBatchNorm2d", "SynchronizedBatchNorm3d"]


class _SynchronizedBatchNorm(SynchronizedStatistics, nn.modules.batchnorm._BatchNorm):
    """The shared forward of SynchronizedBatchNorm1d/2d/3d."""

    def forward(self, x):
        use_batch_stats = self.training or self.running_mean is None
        if not (use_batch_stats and self._synchronized()):
            if recomputing() and self.training and self.track_running_stats:
                return self._untracked_batch_norm(x)
            return super().forward(x)
        self._check_input_dim(x)
        # Run in the recomputation too: its saved input is what backward needs from it.
        mean, m2, count = local_stats(x)
        mean, var, _ = computed_once(lambda: self._exchange_and_track(mean, m2, count))
        return self._normalize(x, mean, var)

    def _untracked_batch_norm(self, x):
        """nn.BatchNorm's training forward with its running statistics left alone.

        Copies stand in for the running buffers, so that backward finds the tensors it saved in the forward.
        """
        return F.batch_norm(x, self.running_mean.clone(), self.running_var.clone(), self.weight, self.bias,
                            True, 0.0, self.eps)

    def _normalize(self, x, mean, var):
        """(x - mean) / sqrt(var + eps) * weight + bias, folded into one scale and shift per channel."""
        scale = torch.rsqrt(var + self.eps)  # (C,)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return torch.addcmul(shift.view(shape), x, scale.view(shape)).to(x.dtype)


class SynchronizedBatchNorm1d(_SynchronizedBatchNorm, nn.BatchNorm1d):
    """Synchronized drop-in for nn.BatchNorm1d: (N, C) or (N, C, L)."""


class SynchronizedBatchNorm2d(_SynchronizedBatchNorm, nn.BatchNorm2d):
    """Synchronized drop-in for nn.BatchNorm2d: (N, C, H, W)."""


class SynchronizedBatchNorm3d(_SynchronizedBatchNorm, nn.BatchNorm3d):
    """Synchronized drop-in for nn.BatchNorm3d: (N, C, D, H, W)."""
