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

from sync_batchnorm.all_gather import all_gather, world_size
from sync_batchnorm.comm import MasterSlaveExchange
from sync_batchnorm.recompute import computed_once, recomputing

__all__ = ["SynchronizedBatchNorm1d", "SynchronizedBatchNorm2d", "SynchronizedBatchNorm3d"]


def combine_stats(means, m2s, counts):
    """Merge per-part statistics (Chan et al.) without the E[x^2] - E[x]^2 cancellation.

    means, m2s: (P, C) per-part means and sums of squared deviations; counts: (P,).
    Returns the mean (C,), the biased variance (C,) and the total count (scalar tensor).
    """
    total = counts.sum()
    weights = counts.unsqueeze(1)  # (P, 1)
    mean = (weights * means).sum(0) / total  # (C,)
    m2 = (m2s + weights * (means - mean).square()).sum(0)  # (C,)
    return mean, m2 / total, total


def _reduce_replica_stats(messages):
    """Master side of the exchange: [(mean, m2, count)] per replica -> [(mean, var, total)] per replica."""
    device = messages[0][0].device
    means = torch.stack([mean.to(device) for mean, _, _ in messages])  # (P, C)
    m2s = torch.stack([m2.to(device) for _, m2, _ in messages])  # (P, C)
    counts = means.new_tensor([count for _, _, count in messages])  # (P,)
    mean, var, total = combine_stats(means, m2s, counts)
    return [(mean.to(m.device), var.to(m.device), total.to(m.device)) for m, _, _ in messages]


class _SynchronizedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """The shared forward of SynchronizedBatchNorm1d/2d/3d."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self._exchange = None
        self._replica_index = 0

    def on_data_parallel_replicate(self, copies):
        """Link this layer's DataParallel replicas (copies[0] on the output device is the master)."""
        exchange = MasterSlaveExchange(len(copies))
        for index, copy in enumerate(copies):
            copy._exchange, copy._replica_index = exchange, index

    def forward(self, x):
        use_batch_stats = self.training or self.running_mean is None
        synchronized = self._exchange is not None or world_size() > 1
        if not (use_batch_stats and synchronized):
            if recomputing() and self.training and self.track_running_stats:
                return self._untracked_batch_norm(x)
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0] + list(range(2, x.dim()))
        count = x.numel() // x.shape[1]
        stat_dtype = torch.promote_types(x.dtype, torch.float32)
        # Run in the recomputation too: its saved input is what backward needs from it.
        var, mean = torch.var_mean(x.to(stat_dtype), dim=dims, correction=0)  # (C,), (C,)
        mean, var = computed_once(lambda: self._exchange_and_track(mean, var * count, count))
        return self._normalize(x, mean, var)

    def _untracked_batch_norm(self, x):
        """nn.BatchNorm's training forward with its running statistics left alone.

        Copies stand in for the running buffers, so that backward finds the tensors it saved in the forward.
        """
        return F.batch_norm(x, self.running_mean.clone(), self.running_var.clone(), self.weight, self.bias,
                            True, 0.0, self.eps)

    def _exchange_and_track(self, mean, m2, count):
        """This part's statistics -> the whole batch's (mean, biased var), running statistics updated."""
        mean, var, total = self._global_stats(mean, m2, count)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), total)
        return mean, var

    def _global_stats(self, mean, m2, count):
        """This part's (mean, m2, count) -> the whole batch's (mean, biased var, total count)."""
        if self._exchange is not None:
            if self._replica_index == 0:
                return self._exchange.run_master((mean, m2, count), _reduce_replica_stats)
            return self._exchange.run_slave(self._replica_index, (mean, m2, count))
        channels = mean.numel()
        packed = torch.cat([mean, m2, mean.new_full((1,), count)])  # (2C + 1,)
        parts = all_gather(packed)  # (world_size, 2C + 1)
        return combine_stats(parts[:, :channels], parts[:, channels:2 * channels], parts[:, -1])

    @torch.no_grad()
    def _update_running_stats(self, mean, var, total):
        """Running statistics as nn.BatchNorm keeps them, with the unbiased variance.

        Only the master replica writes them: the slaves' buffers are dropped after the step.
        """
        if self._replica_index != 0:
            return
        self.num_batches_tracked.add_(1)
        factor = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
        unbiased = var * total / (total - 1)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)

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
