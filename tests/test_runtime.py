"""utils/runtime.py on a mocked GPU machine: the --amp dtype and the current device of --gpu N."""
import pytest
import torch

from utils.runtime import amp_dtype, setup


@pytest.mark.parametrize("capability,expected", [
    ((7, 0), torch.float16),   # V100
    ((7, 5), torch.float16),   # 2080 Ti, upstream's GPU
    ((8, 0), torch.bfloat16),  # A100
    ((9, 0), torch.bfloat16),  # H100
])
def test_amp_picks_bfloat16_only_where_the_gpu_computes_in_it(monkeypatch, capability, expected):
    """torch.cuda.is_bf16_supported() counts emulation by default and says True on every GPU."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or capability >= (8, 0))
    assert amp_dtype(torch.device("cuda", 0)) == expected


def test_amp_is_bfloat16_on_the_cpu():
    assert amp_dtype(torch.device("cpu")) == torch.bfloat16


@pytest.mark.parametrize("gpu,device,ids", [("2", 2, [2]), ("3,1", 3, [3, 1]), (None, 0, [0])])
def test_gpu_flag_makes_its_first_gpu_the_current_device(monkeypatch, gpu, device, ids):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    current = []
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    runtime = setup(gpu)
    assert runtime.device == torch.device("cuda", device) and runtime.gpu_ids == ids
    assert current == [torch.device("cuda", device)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_flag_sets_the_current_cuda_device(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    last = torch.cuda.device_count() - 1
    before = torch.cuda.current_device()
    try:
        assert setup(str(last)).device == torch.device("cuda", last)
        assert torch.cuda.current_device() == last
    finally:
        torch.cuda.set_device(before)
