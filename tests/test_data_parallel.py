"""The one-process multi-GPU path (--gpu 0,1,2,3) on the CPU: replicas run in worker threads the way
torch's parallel_apply runs them, under mixed precision and with a replica that fails."""
import importlib
import threading

import pytest
import torch
import torch.nn as nn

import train
import utils.runtime
from sync_batchnorm import SynchronizedBatchNorm2d
from utils.data_parallel import AutocastDataParallel
from utils.runtime import Runtime, autocast

TIMEOUT_S = 20
# The module (torch.nn.parallel.data_parallel is also the name of a function in torch.nn.parallel).
TORCH_DATA_PARALLEL = importlib.import_module("torch.nn.parallel.data_parallel")


def threaded_parallel_apply(modules, inputs, kwargs_tup=None, devices=None):
    """torch.nn.parallel.parallel_apply on the CPU: each replica in a worker thread that re-enters
    ``torch.autocast(device_type, enabled=...)`` without a dtype, as torch's does; after every thread
    ended, the first failure in replica order is raised. A replica still running after TIMEOUT_S
    fails the test (daemon threads: a hang cannot block the suite)."""
    kwargs_tup = kwargs_tup or ({},) * len(modules)
    enabled = torch.is_autocast_enabled("cpu")
    results = [None] * len(modules)

    def work(i):
        try:
            with torch.autocast("cpu", enabled=enabled):
                results[i] = modules[i](*inputs[i], **kwargs_tup[i])
        except Exception as error:
            results[i] = error

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(modules))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    hung = [i for i, thread in enumerate(threads) if thread.is_alive()]
    assert not hung, f"replicas {hung} still wait after {TIMEOUT_S} s"
    threaded_parallel_apply.results = results
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


@pytest.fixture
def cpu_parallel_apply(monkeypatch):
    monkeypatch.setattr(TORCH_DATA_PARALLEL, "parallel_apply", threaded_parallel_apply)


class DtypeProbe(nn.Module):
    """A linear layer that records the dtype each call computed in."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.seen = []

    def forward(self, x):
        out = self.linear(x)
        self.seen.append(out.dtype)
        return out


@pytest.mark.parametrize("wrap", [
    pytest.param(lambda net: train.parallelize(net, Runtime(torch.device("cpu"), [0, 1])), id="train"),
    pytest.param(AutocastDataParallel, id="evaluate"),
])
def test_replicas_compute_in_the_runs_amp_dtype_and_the_scaler_matches(cpu_parallel_apply, monkeypatch, wrap):
    """The run picks float16 (as on a GPU without bfloat16); the CPU's default autocast dtype, which a
    worker thread falls back to, is bfloat16, as CUDA's default float16 differs from a bf16 run."""
    monkeypatch.setattr(utils.runtime, "amp_dtype", lambda device: torch.float16)
    monkeypatch.setattr(train, "amp_dtype", lambda device: torch.float16)
    cpu = torch.device("cpu")
    net = DtypeProbe()
    model = wrap(net)
    _, scaler = train.build_optimizer(train.get_args_parser().parse_args(["--amp"]), net, cpu)
    chunks = [(torch.randn(2, 4),), (torch.randn(3, 4),)]
    with autocast(cpu, True):
        outputs = model.parallel_apply([net, net], chunks, [{}, {}])
    assert net.seen == [torch.float16, torch.float16]
    assert [out.dtype for out in outputs] == [torch.float16, torch.float16]
    assert scaler.is_enabled()


class FailsOn(nn.Module):
    """Raises torch.OutOfMemoryError on a batch of `size` samples, passes others through."""

    def __init__(self, size):
        super().__init__()
        self.size = size

    def forward(self, x):
        if x.shape[0] == self.size:
            raise torch.OutOfMemoryError("out of memory on the replica with 3 samples")
        return x


def test_a_failing_replica_fails_the_step_with_its_error_instead_of_hanging(cpu_parallel_apply):
    """Replica 1 raises before its synchronized BN; the master (0) and the other slave (2) wait for
    its statistics. Every replica must end with replica 1's error, and the step raise it."""
    bn = SynchronizedBatchNorm2d(3)
    copies = [bn._replicate_for_data_parallel() for _ in range(3)]
    bn.on_data_parallel_replicate(copies)
    replicas = [nn.Sequential(FailsOn(3), copy) for copy in copies]
    model = train.parallelize(nn.Sequential(FailsOn(3), bn), Runtime(torch.device("cpu"), [0, 1, 2]))
    chunks = [(torch.randn(size, 3, 4, 4),) for size in (2, 3, 2)]
    with pytest.raises(torch.OutOfMemoryError, match="out of memory on the replica with 3 samples"):
        model.parallel_apply(replicas, chunks, [{}, {}, {}])
    for result in threaded_parallel_apply.results:
        assert isinstance(result, torch.OutOfMemoryError) and "replica with 3 samples" in str(result)


@pytest.mark.skipif(torch.cuda.device_count() < 2 or not torch.cuda.is_bf16_supported(including_emulation=False),
                    reason="needs two GPUs with bfloat16")
def test_replicas_on_two_gpus_compute_in_bfloat16():
    net = DtypeProbe().cuda(0)
    model = train.parallelize(net, Runtime(torch.device("cuda", 0), [0, 1]))
    with autocast(torch.device("cuda", 0), True):
        model(torch.randn(4, 4, device="cuda:0"))
    assert net.seen == [torch.bfloat16, torch.bfloat16]
