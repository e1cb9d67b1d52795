"""Memory-efficient training (checkpointed segments) takes the default's step exactly: the same loss,
gradients, running statistics and dropout masks, and synchronized BN exchanges once per layer."""
import threading

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn

import networks
import sync_batchnorm.statistics
import train
from bench.common import PeakTensorMemory
from networks.norms import make_layout
from networks.resnet import ResNet
from networks.segmentation import conv_bn_relu
from sync_batchnorm import SynchronizedBatchNorm2d
from sync_batchnorm.comm import MasterSlaveExchange
from sync_batchnorm.replicate import execute_replication_callbacks
from sync_batchnorm.statistics import LocalStatistics


class TinySegmenter(ResNet):
    """The dilated ResNet with one bottleneck per stage and a small head (conv-norm-ReLU, Dropout2d, conv).

    (B, 3, H, W) -> (logits (B, 3, h, w), layer3 features (B, 1024, h, w)).
    """

    def __init__(self, memory_efficient, dropout=0.5, norm="syncbn"):
        layout = make_layout(norm)
        super().__init__(layers=(1, 1, 1, 1), norm_layer=layout.norm, act_layer=layout.act,
                         memory_efficient=memory_efficient)
        self.head = nn.Sequential(*conv_bn_relu(2048, 32, 1, layout.norm_act), nn.Dropout2d(dropout),
                                  nn.Conv2d(32, 3, kernel_size=1))
        # Random norm scales: the zero-initialised ones of the residual branches would zero most gradients.
        generator = torch.Generator().manual_seed(3)
        for module in self.modules():
            if isinstance(module, LocalStatistics):
                module.weight.data.uniform_(0.5, 1.5, generator=generator)
                module.bias.data.uniform_(-0.5, 0.5, generator=generator)

    def forward(self, x):
        c3, c4 = super().forward(x)
        return self.segment(self.head, c4), c3


def tiny_pair(dtype=torch.float64, dropout=0.5, norm="syncbn"):
    """A default and a memory-efficient TinySegmenter with the same weights."""
    torch.manual_seed(0)
    default = TinySegmenter(False, dropout, norm).to(dtype)
    efficient = TinySegmenter(True, dropout, norm).to(dtype)
    efficient.load_state_dict(default.state_dict())
    return default, efficient


def tiny_loss(outputs):
    logits, c3 = outputs
    return logits.square().mean() + c3.mean()


def step_state(net, loss):
    """The loss, every parameter's gradient and every buffer after a step, by name."""
    state = {"loss": loss.detach()}
    state.update({f"grad.{name}": p.grad for name, p in net.named_parameters()})
    state.update({f"buffer.{name}": b for name, b in net.named_buffers()})
    return state


def assert_bitwise_equal(got, expected):
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] is not None and torch.equal(got[key], value), key


def one_step(net, x, seed=5, layout=torch.contiguous_format, amp=False):
    """A training step's forward and backward of ``net`` on x, dropout seeded with ``seed``."""
    net = net.to(memory_format=layout).train()
    torch.manual_seed(seed)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        loss = tiny_loss(net(x.contiguous(memory_format=layout)))
    loss.backward()
    return step_state(net, loss)


def test_single_process_step_is_bitwise_the_default_with_the_same_dropout_masks():
    default, efficient = tiny_pair()
    x = torch.randn(2, 3, 17, 17, dtype=torch.float64)
    expected = one_step(default, x)
    assert_bitwise_equal(one_step(efficient, x), expected)
    torch.manual_seed(6)
    assert not torch.equal(tiny_loss(default(x)), expected["loss"]), "the masks play no part"


def test_official_inplace_abn_layout_step_is_bitwise_the_default():
    """InPlace-ABN writes over its input and keeps only its output: recomputed, it must see the
    forward's statistics again and leave its running statistics alone."""
    default, efficient = tiny_pair(norm="inplace-abn")
    x = torch.randn(2, 3, 33, 33, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert_bitwise_equal(one_step(efficient, x), one_step(default, x))


def test_bf16_autocast_channels_last_step_is_bitwise_the_default():
    default, efficient = tiny_pair(torch.float32)
    x = torch.randn(2, 3, 17, 17)
    assert_bitwise_equal(one_step(efficient, x, layout=torch.channels_last, amp=True),
                         one_step(default, x, layout=torch.channels_last, amp=True))


def test_activations_kept_for_backward_shrink_fivefold_and_the_peak_falls():
    default, efficient = tiny_pair(torch.float32, dropout=0.1)
    x = torch.randn(2, 3, 65, 65)
    kept, peaks = [], []
    for net in (default, efficient):
        tracker = PeakTensorMemory()
        with tracker:
            loss = tiny_loss(net(x))
            kept.append(tracker.current)
            loss.backward()
        peaks.append(tracker.peak)
    assert kept[1] < kept[0] / 5
    assert peaks[1] < peaks[0]


def cpu_replicas(model, count):
    """CPU stand-ins for nn.parallel.replicate: copies of every module whose parameters are
    differentiable views of model's, norm layers linked as DataParallelWithCallback links them."""
    replicas = []
    for _ in range(count):
        copies = {module: module._replicate_for_data_parallel() for module in model.modules()}
        for module, replica in copies.items():
            replica._modules = {name: copies[child] for name, child in module._modules.items()}
            for name, param in module._parameters.items():
                if param is None:
                    replica._parameters[name] = None
                else:
                    setattr(replica, name, param.view_as(param))
        replicas.append(copies[model])
    execute_replication_callbacks(replicas)
    return replicas


def parallel_step(net, x, count):
    """A DataParallel step on the CPU: each replica's forward in its own thread, one backward."""
    replicas, chunks = cpu_replicas(net, count), x.chunk(count)
    losses = [None] * count

    def work(index):
        losses[index] = tiny_loss(replicas[index](chunks[index]))

    threads = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    loss = sum(losses)
    loss.backward()
    return step_state(net, loss)


def test_thread_replicas_exchange_once_per_layer_and_match_the_default(monkeypatch):
    # Dropout off: the CPU replicas share one generator, drawn in thread order (on GPUs each has its own).
    default, efficient = tiny_pair(dropout=0.0)
    x = torch.randn(4, 3, 17, 17, dtype=torch.float64)
    layers = sum(isinstance(m, SynchronizedBatchNorm2d) for m in default.modules())
    calls = []
    run_master = MasterSlaveExchange.run_master
    monkeypatch.setattr(MasterSlaveExchange, "run_master",
                        lambda self, *args: calls.append(self) or run_master(self, *args))
    expected = parallel_step(default, x, 2)
    assert len(calls) == layers
    calls.clear()
    assert_bitwise_equal(parallel_step(efficient, x, 2), expected)
    assert len(calls) == len(set(calls)) == layers


def _gloo_worker(rank, store_path, results):
    torch.distributed.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    calls = []
    all_gather = sync_batchnorm.statistics.all_gather
    sync_batchnorm.statistics.all_gather = lambda tensor: calls.append(tensor.shape) or all_gather(tensor)
    x = torch.randn(4, 3, 17, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    states = []
    for net in tiny_pair():
        calls.clear()
        ddp = nn.parallel.DistributedDataParallel(net)
        torch.manual_seed(5 + rank)
        loss = tiny_loss(ddp(x[2 * rank:2 * rank + 2]))
        loss.backward()
        states.append(dict(step_state(net, loss), exchanges=torch.tensor(len(calls))))
    torch.save(states, f"{results}.{rank}")
    torch.distributed.destroy_process_group()


def test_gloo_processes_exchange_once_per_layer_and_match_the_default(tmp_path):
    mp.spawn(_gloo_worker, args=(str(tmp_path / "store"), str(tmp_path / "result")), nprocs=2)
    layers = sum(isinstance(m, SynchronizedBatchNorm2d) for m in tiny_pair()[0].modules())
    for rank in range(2):
        default, efficient = torch.load(f"{tmp_path / 'result'}.{rank}", weights_only=True)
        assert default["exchanges"] == efficient["exchanges"] == layers
        assert_bitwise_equal(efficient, default)


def test_ccnet_step_of_train_py_is_bitwise_the_default():
    """The full CCNet (R=2, OHEM + DSN, Dropout2d) as train.py --memory-efficient builds it.

    float32, as the step is bitwise the same in any dtype and ResNet-101 is slow in float64 on the CPU.
    """
    args = train.get_args_parser().parse_args(["--restore-from", "none", "--recurrence", "2", "--ohem", "1",
                                               "--num-classes", "4", "--memory-efficient"])
    torch.manual_seed(0)
    net = train.build_network(args, torch.device("cpu"))
    assert net.memory_efficient
    for module in net.modules():
        if isinstance(module, SynchronizedBatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
    initial = {name: buffer.clone() for name, buffer in net.named_buffers()}
    images = torch.randn(2, 3, 17, 17)
    labels = torch.randint(0, 4, (2, 17, 17))
    states = []
    for memory_efficient in (False, True):
        for name, buffer in net.named_buffers():
            buffer.copy_(initial[name])
        net.zero_grad(set_to_none=True)
        net.memory_efficient = memory_efficient
        torch.manual_seed(5)
        loss = net(images, labels)
        loss.backward()
        states.append({key: value.clone() for key, value in step_state(net, loss).items()})
    assert_bitwise_equal(states[1], states[0])


def test_memory_efficient_refuses_plain_batchnorm():
    with pytest.raises(ValueError, match="SynchronizedBatchNorm2d"):
        networks.build_model("pspnet", 4, norm_layer=nn.BatchNorm2d, memory_efficient=True)
