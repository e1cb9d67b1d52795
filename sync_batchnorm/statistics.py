"""Batch statistics of a normalization layer over the whole batch across replicas and processes.

A layer mixing in SynchronizedStatistics is linked to its nn.DataParallel replicas by
DataParallelWithCallback (on_data_parallel_replicate), or runs in one of several torch.distributed
processes; either way its per-channel statistics are those of the concatenated batch, and
_sum_over_replicas sums any per-channel tensor (InPlace-ABN's gradient sums) over the same parts.
LocalStatistics is the unsynchronized counterpart. Shared by SynchronizedBatchNorm, InPlaceABN and
InPlaceABNSync.
"""
import torch

from sync_batchnorm.all_gather import all_gather, world_size
from sync_batchnorm.comm import MasterSlaveExchange
from utils.runtime import all_reduce_sum


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


def _reduce_replica_sums(messages):
    """Master side of the exchange: one tensor per replica -> their sum, once on each replica's device."""
    total = torch.stack([m.to(messages[0].device) for m in messages]).sum(0)
    return [total.to(m.device) for m in messages]


def local_stats(x):
    """Per-channel mean (C,) and sum of squared deviations m2 (C,) of x (N, C, ...), and the count per channel.

    Computed in float32 for float16/bfloat16 inputs (float64 for double ones).
    """
    dims = [0] + list(range(2, x.dim()))
    count = x.numel() // x.shape[1]
    var, mean = torch.var_mean(x.to(torch.promote_types(x.dtype, torch.float32)), dim=dims, correction=0)
    return mean, var * count, count


class LocalStatistics:
    """Mixin for an nn.modules.batchnorm._NormBase: the statistics of this forward's batch alone."""

    _replica_index = 0

    def _global_stats(self, mean, m2, count):
        """This batch's (mean, m2, count) -> (mean, biased var, count as a tensor)."""
        if count <= 1:
            raise ValueError(f"expected more than 1 value per channel when training, got {count}")
        return mean, m2 / count, mean.new_tensor(float(count))

    def _sum_over_replicas(self, tensor):
        """``tensor`` summed over the parts of the batch: here the batch is whole."""
        return tensor

    def _exchange_and_track(self, mean, m2, count):
        """This part's (mean, m2, count) -> the whole batch's (mean, biased var, total), the running
        statistics updated when training tracks them (recompute.computed_once runs it once per step)."""
        mean, var, total = self._global_stats(mean, m2, count)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), total)
        return mean, var, total

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


class SynchronizedStatistics(LocalStatistics):
    """LocalStatistics over every DataParallel replica and torch.distributed process."""

    _exchange = None

    def on_data_parallel_replicate(self, copies):
        """Link this layer's DataParallel replicas (copies[0] on the output device is the master)."""
        exchange = MasterSlaveExchange(len(copies))
        for index, copy in enumerate(copies):
            copy._exchange, copy._replica_index = exchange, index

    def on_data_parallel_error(self, error):
        """This replica failed: the others waiting for its statistics raise ``error`` instead."""
        if self._exchange is not None:
            self._exchange.abort(error)

    def _synchronized(self):
        """Whether this forward shares its statistics with DataParallel replicas or other processes."""
        return self._exchange is not None or world_size() > 1

    def _global_stats(self, mean, m2, count):
        """This part's (mean, m2, count) -> the whole batch's (mean, biased var, total count)."""
        if self._exchange is not None:
            if self._replica_index == 0:
                return self._exchange.run_master((mean, m2, count), _reduce_replica_stats)
            return self._exchange.run_slave(self._replica_index, (mean, m2, count))
        if world_size() == 1:
            return super()._global_stats(mean, m2, count)
        channels = mean.numel()
        packed = torch.cat([mean, m2, mean.new_full((1,), count)])  # (2C + 1,)
        parts = all_gather(packed)  # (world_size, 2C + 1)
        return combine_stats(parts[:, :channels], parts[:, channels:2 * channels], parts[:, -1])

    def _sum_over_replicas(self, tensor):
        """``tensor`` summed over the replicas and processes that share this layer's statistics."""
        if self._exchange is not None:
            if self._replica_index == 0:
                return self._exchange.run_master(tensor, _reduce_replica_sums)
            return self._exchange.run_slave(self._replica_index, tensor)
        if world_size() == 1:
            return tensor
        return all_reduce_sum(tensor.clone())
