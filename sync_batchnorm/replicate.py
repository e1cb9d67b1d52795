"""nn.DataParallel that lets each layer's replicas know about each other after replication, and
about a replica that fails."""
import functools

import torch.nn as nn

from utils.data_parallel import AutocastDataParallel


def execute_replication_callbacks(replicas):
    """Call ``on_data_parallel_replicate(copies)`` on every layer that defines it.

    replicas: the per-device copies of one module, device 0's first; ``copies`` is the list of
    one layer's copies in that order.
    """
    for copies in zip(*(replica.modules() for replica in replicas)):
        callback = getattr(copies[0], "on_data_parallel_replicate", None)
        if callback is not None:
            callback(list(copies))


class _AbortOnError(nn.Module):
    """Runs ``replica``; if it raises, calls ``on_data_parallel_error(error)`` on each of its layers
    that defines it (synchronized BN aborts its exchange, so no other replica waits forever)."""

    def __init__(self, replica):
        super().__init__()
        self.replica = replica

    def forward(self, *args, **kwargs):
        try:
            return self.replica(*args, **kwargs)
        except Exception as error:
            for module in self.replica.modules():
                callback = getattr(module, "on_data_parallel_error", None)
                if callback is not None:
                    callback(error)
            raise


class DataParallelWithCallback(AutocastDataParallel):
    """nn.DataParallel whose replicas are linked after each replication (for synchronized BN), run
    under the caller's autocast dtype, and abort the step together when one of them fails."""

    def replicate(self, module, device_ids):
        replicas = super().replicate(module, device_ids)
        execute_replication_callbacks(replicas)
        return replicas

    def parallel_apply(self, replicas, inputs, kwargs):
        return super().parallel_apply([_AbortOnError(replica) for replica in replicas], inputs, kwargs)


def patch_replication_callback(data_parallel):
    """Make an existing nn.DataParallel instance link its replicas and abort them together like
    DataParallelWithCallback (its autocast stays nn.DataParallel's)."""
    if not isinstance(data_parallel, nn.DataParallel):
        raise TypeError(f"expected an nn.DataParallel, got {type(data_parallel).__name__}")
    replicate, parallel_apply = data_parallel.replicate, data_parallel.parallel_apply

    @functools.wraps(replicate)
    def replicate_with_callback(module, device_ids):
        replicas = replicate(module, device_ids)
        execute_replication_callbacks(replicas)
        return replicas

    @functools.wraps(parallel_apply)
    def parallel_apply_aborting_together(replicas, inputs, kwargs):
        return parallel_apply([_AbortOnError(replica) for replica in replicas], inputs, kwargs)

    data_parallel.replicate = replicate_with_callback
    data_parallel.parallel_apply = parallel_apply_aborting_together
