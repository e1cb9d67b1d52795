"""nn.DataParallel that lets each layer's replicas know about each other after replication."""
import functools

import torch.nn as nn


def execute_replication_callbacks(replicas):
    """Call ``on_data_parallel_replicate(copies)`` on every layer that defines it.

    replicas: the per-device copies of one module, device 0's first; ``copies`` is the list of
    one layer's copies in that order.
    """
    for copies in zip(*(replica.modules() for replica in replicas)):
        callback = getattr(copies[0], "on_data_parallel_replicate", None)
        if callback is not None:
            callback(list(copies))


class DataParallelWithCallback(nn.DataParallel):
    """nn.DataParallel whose replicas are linked after each replication (for synchronized BN)."""

    def replicate(self, module, device_ids):
        replicas = super().replicate(module, device_ids)
        execute_replication_callbacks(replicas)
        return replicas


def patch_replication_callback(data_parallel):
    """Make an existing nn.DataParallel instance link its replicas like DataParallelWithCallback."""
    if not isinstance(data_parallel, nn.DataParallel):
        raise TypeError(f"expected an nn.DataParallel, got {type(data_parallel).__name__}")
    replicate = data_parallel.replicate

    @functools.wraps(replicate)
    def replicate_with_callback(module, device_ids):
        replicas = replicate(module, device_ids)
        execute_replication_callbacks(replicas)
        return replicas

    data_parallel.replicate = replicate_with_callback
