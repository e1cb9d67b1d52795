"""The speed options shared by train.py and evaluate.py: --amp (autocast) and --channels-last."""
from contextlib import nullcontext

import torch


def amp_dtype(device):
    """bfloat16 where the device supports it (CPUs, CUDA GPUs from Ampere on), else float16."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast(device, enabled):
    """torch.autocast on device in amp_dtype(device) when enabled, else a null context."""
    return torch.autocast(device.type, dtype=amp_dtype(device)) if enabled else nullcontext()


def memory_format(channels_last):
    """torch.channels_last (NHWC) when asked for, else the contiguous NCHW format."""
    return torch.channels_last if channels_last else torch.contiguous_format
