"""Wall-clock timing of device work: synchronize around the region, warm up, take the median."""
import statistics
import time

import torch


def synchronize(device):
    """Wait for the work queued on a CUDA device (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device, repeat, warmup=2):
    """Median milliseconds of fn() over `repeat` timed calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
