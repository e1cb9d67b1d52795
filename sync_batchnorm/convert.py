"""Swap every nn.BatchNorm1d/2d/3d of a model for its synchronized twin."""
import torch.nn as nn

from sync_batchnorm.batchnorm import SynchronizedBatchNorm1d, SynchronizedBatchNorm2d, SynchronizedBatchNorm3d
from sync_batchnorm.replicate import DataParallelWithCallback

_SYNCHRONIZED = {
    nn.BatchNorm1d: SynchronizedBatchNorm1d,
    nn.BatchNorm2d: SynchronizedBatchNorm2d,
    nn.BatchNorm3d: SynchronizedBatchNorm3d,
}


def _synchronized_copy(bn):
    """A synchronized layer holding ``bn``'s own parameter and buffer tensors."""
    sync = _SYNCHRONIZED[type(bn)](bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    for name, param in bn.named_parameters(recurse=False):
        setattr(sync, name, param)
    for name, buffer in bn.named_buffers(recurse=False):
        setattr(sync, name, buffer)
    return sync.train(bn.training)


def convert_model(module):
    """Return ``module`` with its BatchNorm layers synchronized, weights and buffers kept.

    An nn.DataParallel comes back as a DataParallelWithCallback on the same devices.
    Submodules are replaced in place; a bare BatchNorm layer is returned as a new layer.
    """
    if isinstance(module, nn.DataParallel):
        inner = convert_model(module.module)
        if not module.device_ids:  # no accelerator: DataParallel only wraps the module
            return DataParallelWithCallback(inner)
        return DataParallelWithCallback(inner, module.device_ids, module.output_device, module.dim)
    if type(module) in _SYNCHRONIZED:
        return _synchronized_copy(module)
    for name, child in module.named_children():
        setattr(module, name, convert_model(child))
    return module
