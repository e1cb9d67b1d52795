"""Synchronized BatchNorm against one nn.BatchNorm over the concatenated batch."""
import copy

import pytest
import torch
import torch.nn as nn

from sync_batchnorm import (DataParallelWithCallback, SynchronizedBatchNorm1d, SynchronizedBatchNorm2d,
                            SynchronizedBatchNorm3d, convert_model, patch_replication_callback)
from replicas import replicas_of, run_in_gloo_processes, run_in_threads, step_on_share

CHANNELS = 5
SPLIT = (2, 3, 1)  # unequal parts, as the last batch of an epoch may be


def _layers(seed=0):
    """A SynchronizedBatchNorm2d and an nn.BatchNorm2d with the same random affine parameters."""
    torch.manual_seed(seed)
    sync = SynchronizedBatchNorm2d(CHANNELS)
    with torch.no_grad():
        sync.weight.uniform_(0.5, 1.5)
        sync.bias.uniform_(-0.5, 0.5)
    reference = nn.BatchNorm2d(CHANNELS)
    reference.load_state_dict(sync.state_dict())
    return sync, reference


def _batch(dtype=torch.float32):
    torch.manual_seed(1)
    x = 3 * torch.randn(sum(SPLIT), CHANNELS, 4, 6, dtype=torch.float64) + 2
    return x.to(dtype), torch.randn(x.shape)


def _run_threads(replicas, chunks):
    """Each replica's forward in its own thread; the outputs concatenated."""
    return torch.cat(run_in_threads([lambda i=i: replicas[i](chunks[i]) for i in range(len(replicas))]))


def _reference(reference, x, grad):
    """Output, input gradient and parameter gradients of nn.BatchNorm2d on the whole batch."""
    x = x.float().clone().requires_grad_()
    out = reference(x)
    out.backward(grad)
    return out, x.grad


def _assert_same_state(sync, reference):
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(sync.state_dict()[key], value, atol=1e-5, rtol=0)


def test_outside_parallel_it_is_plain_batchnorm():
    sync, reference = _layers()
    x, _ = _batch()
    torch.testing.assert_close(sync(x), reference(x), atol=0, rtol=0)
    _assert_same_state(sync, reference)
    sync.eval(), reference.eval()
    torch.testing.assert_close(sync(x), reference(x), atol=0, rtol=0)


def test_thread_replicas_match_batchnorm_on_whole_batch():
    sync, reference = _layers()
    x, grad = _batch()
    for _ in range(2):  # twice, so that the running statistics average over two steps
        leaf = x.clone().requires_grad_()
        out = _run_threads(replicas_of(sync, len(SPLIT)), leaf.split(SPLIT))
        out.backward(grad)
        expected_out, expected_grad = _reference(reference, x, grad)
        torch.testing.assert_close(out, expected_out, atol=1e-5, rtol=0)
        torch.testing.assert_close(leaf.grad, expected_grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(sync.weight.grad, reference.weight.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(sync.bias.grad, reference.bias.grad, atol=1e-5, rtol=0)
    _assert_same_state(sync, reference)


def test_thread_replicas_keep_channels_last():
    sync, reference = _layers()
    x, grad = _batch()
    x = x.contiguous(memory_format=torch.channels_last)
    out = _run_threads(replicas_of(sync, len(SPLIT)), x.split(SPLIT))
    assert all(part.is_contiguous(memory_format=torch.channels_last) for part in out.split(SPLIT))
    torch.testing.assert_close(out, reference(x.contiguous()), atol=1e-5, rtol=0)


def test_autocast_keeps_statistics_in_float32():
    sync, reference = _layers()
    x, _ = _batch(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _run_threads(replicas_of(sync, len(SPLIT)), x.split(SPLIT))
    assert out.dtype == torch.bfloat16
    var, mean = torch.var_mean(x.float(), dim=(0, 2, 3), correction=0)
    normalized = (x.float() - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + sync.eps)
    expected = normalized * sync.weight.view(1, -1, 1, 1) + sync.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(out, expected.to(torch.bfloat16))
    reference(x.float())
    _assert_same_state(sync, reference)


def _gloo_part(rank):
    return step_on_share(_layers()[0], *_batch(), rank, (2, 4))


def test_gloo_processes_match_batchnorm_on_whole_batch(tmp_path):
    ranks = run_in_gloo_processes(_gloo_part, 2, tmp_path)
    _, reference = _layers()
    x, grad = _batch()
    x = x[:6]
    expected_out, expected_grad = _reference(reference, x, grad[:6])
    torch.testing.assert_close(torch.cat([r["out"] for r in ranks]), expected_out, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([r["grad"] for r in ranks]), expected_grad, atol=1e-5, rtol=0)
    # DDP sums the parameter gradients of the processes; each holds its own part.
    torch.testing.assert_close(ranks[0]["weight"] + ranks[1]["weight"], reference.weight.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(ranks[0]["bias"] + ranks[1]["bias"], reference.bias.grad, atol=1e-5, rtol=0)
    for r in ranks:
        for key, value in reference.state_dict().items():
            torch.testing.assert_close(r["state"][key], value, atol=1e-5, rtol=0)


def test_convert_model_swaps_batchnorm_keeping_tensors():
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Sequential(nn.BatchNorm2d(4, momentum=None)),
                          nn.BatchNorm3d(2, affine=False), nn.ReLU())
    model.eval()
    for bn in (model[0], model[1][0], model[2]):
        bn.running_mean.uniform_()
    before = copy.deepcopy(model.state_dict())
    weight = model[0].weight
    converted = convert_model(model)
    assert [type(m) for m in (converted[0], converted[1][0], converted[2])] == \
        [SynchronizedBatchNorm1d, SynchronizedBatchNorm2d, SynchronizedBatchNorm3d]
    assert converted[0].weight is weight and converted[1][0].momentum is None and not converted[2].affine
    assert not converted[0].training
    assert converted.state_dict().keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(converted.state_dict()[key], value)


def test_convert_model_wraps_data_parallel_with_callback():
    converted = convert_model(nn.DataParallel(nn.Sequential(nn.BatchNorm2d(3))))
    assert isinstance(converted, DataParallelWithCallback)
    assert isinstance(converted.module[0], SynchronizedBatchNorm2d)


def test_patch_replication_callback_links_replicas():
    data_parallel = nn.DataParallel(SynchronizedBatchNorm2d(3))
    # A CPU stand-in for nn.parallel.replicate, which needs CUDA devices.
    data_parallel.replicate = lambda module, device_ids: [module._replicate_for_data_parallel() for _ in device_ids]
    patch_replication_callback(data_parallel)
    first, second = data_parallel.replicate(data_parallel.module, [0, 1])
    assert first._exchange is second._exchange is not None
    assert (first._replica_index, second._replica_index) == (0, 1)
    with pytest.raises(TypeError):
        patch_replication_callback(nn.Sequential())
