"""nn.DataParallel whose replicas compute in the caller's autocast dtype.

nn.DataParallel runs each replica in a worker thread, and torch's parallel_apply re-enters
``torch.autocast(device_type, enabled=...)`` there without a dtype. The autocast dtype is
thread-local, so the replicas fall back to the device's default (float16 on CUDA) whatever dtype
the caller chose: a bfloat16 run would train in float16 without the GradScaler float16 needs.
"""
import torch
import torch.nn as nn


class _UnderAutocast(nn.Module):
    """Runs ``module`` under torch.autocast(device_type, dtype)."""

    def __init__(self, module, device_type, dtype):
        super().__init__()
        self.module, self.device_type, self.dtype = module, device_type, dtype

    def forward(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.module(*args, **kwargs)


def _device_type(inputs):
    """The device type of the first tensor among the scattered inputs (per replica tuples), or None."""
    for args in inputs:
        for value in args:
            if isinstance(value, torch.Tensor):
                return value.device.type
    return None


class AutocastDataParallel(nn.DataParallel):
    """nn.DataParallel whose replicas run under the autocast (enabled, dtype) of the calling thread."""

    def parallel_apply(self, replicas, inputs, kwargs):
        device_type = _device_type(inputs)
        if device_type is not None and torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
            replicas = [_UnderAutocast(replica, device_type, dtype) for replica in replicas]
        return super().parallel_apply(replicas, inputs, kwargs)
