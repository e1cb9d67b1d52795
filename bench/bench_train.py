"""One CCNet (R=2) training step, configuration by configuration, against upstream's step.

    python bench/bench_train.py                                        # CPU: 97x97 crop, batch 1
    python bench/bench_train.py --device cuda --json bench_train.json  # GPU: 769x769 crop, batch 2

A step is forward, OHEM + DSN loss, backward and SGD on synthetic images and labels. Rows:
the upstream-style baseline (bmm/permute attention, numpy/scipy OHEM on the host, fp32, plain BN);
then this project in strict fp32, the same with checkpointed segments (train.py --memory-efficient),
+ TF32 (CUDA only), + bf16 autocast (train.py --amp), + channels_last (train.py --channels-last),
+ torch.compile (on the GPU by default, on the CPU with --compile 1). Every row starts from the
same initial weights; the rows are timed in interleaved rounds. Peak memory is what the CUDA allocator would peak at during a step with the
row's model alone on the GPU (weights, gradients and momentum included); on the CPU it is the
storages allocated during a step (bench.common.PeakTensorMemory), not measured for compiled code,
whose kernels bypass the dispatcher.
"""
import copy
import datetime
import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import networks  # noqa: E402
from bench import common  # noqa: E402
from bench.common import (IGNORE_LABEL, NUM_CLASSES, add_json_argument, add_measurement_arguments,  # noqa: E402
                          benchmark_device, interleaved_median_ms, peak_mb, print_table, save_record, set_tf32,
                          with_tf32)
from bench.upstream_baseline import UpstreamCriterionOhemDSN, to_upstream_style  # noqa: E402
from sync_batchnorm import convert_model  # noqa: E402
from utils.cli import ArgumentParser, positive_int, size_pair, str2bool  # noqa: E402
from utils.errors import exit_on_user_error  # noqa: E402
from utils.losses import CriterionOhemDSN  # noqa: E402
from utils.runtime import autocast, device_name, memory_format  # noqa: E402

def configurations(device, compile_model):
    """The benchmark rows: (name, upstream-style, TF32, AMP bf16, channels_last, compile, memory-efficient),
    or a skip note."""
    on_gpu = device.type == "cuda"
    rows = [("upstream-style baseline, fp32", True, False, False, False, False, False),
            ("ours, fp32", False, False, False, False, False, False),
            ("ours, fp32, memory-efficient", False, False, False, False, False, True),
            ("+ TF32", False, True, False, False, False, False) if on_gpu else ("+ TF32", "CUDA only"),
            ("+ AMP bf16", False, on_gpu, True, False, False, False),
            ("+ channels_last", False, on_gpu, True, True, False, False)]
    if compile_model:
        rows.append(("+ torch.compile", False, on_gpu, True, True, True, False))
    return rows


def synthetic_batch(batch, size, device, generator):
    """Images (B, 3, H, W) float32 and labels (B, H, W) long with ~5% ignored pixels."""
    images = torch.randn(batch, 3, *size, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (batch, *size), generator=generator)
    labels[torch.rand(batch, *size, generator=generator) < 0.05] = IGNORE_LABEL
    return images.to(device), labels.to(device)


def training_step(model, optimizer, images, labels, autocast):
    """A closure running one step as train.py does: loss = model(images, labels); backward; SGD."""
    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = model(images, labels)
        loss.backward()
        optimizer.step()
    return step


def persistent_bytes(net, optimizer):
    """Bytes of the parameters, their gradients and the optimizer state."""
    tensors = [p for p in net.parameters()] + [p.grad for p in net.parameters() if p.grad is not None]
    tensors += [t for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def peak_memory_mb(step, net, optimizer, device):
    """MiB: on CUDA the allocator's peak one step would reach with this model alone on the device (its
    weights, gradients and momentum included); on the CPU the storages the step allocates at most."""
    own = persistent_bytes(net, optimizer) / 2**20 if device.type == "cuda" else 0.0
    return peak_mb(step, device) + own


def prepare(initial, config, images, labels, args, device):
    """(model, optimizer, step closure) of one configuration, from a copy of the initial weights."""
    _, upstream_style, _, amp, channels_last, compiled, memory_efficient = config
    net = copy.deepcopy(initial)
    if upstream_style:
        to_upstream_style(net, UpstreamCriterionOhemDSN(IGNORE_LABEL, args.ohem_thres, args.ohem_keep))
    if memory_efficient:  # synchronized BN keeps its statistics when recomputed; alone, it is plain BN
        net = convert_model(net)
        net.memory_efficient = True
    layout = memory_format(channels_last)
    net.to(device=device, memory_format=layout).train()
    images = images.contiguous(memory_format=layout)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model = torch.compile(net) if compiled else net
    return net, optimizer, training_step(model, optimizer, images, labels, autocast(device, amp))


def measure(initial, configs, images, labels, args, device):
    """Rows of step time, images/s and peak memory, one per configuration."""
    prepared = [prepare(initial, config, images, labels, args, device) for config in configs]
    steps = [with_tf32(step, device, config[2]) for config, (_, _, step) in zip(configs, prepared)]
    times = interleaved_median_ms(steps, device, args.repeat, args.warmup)
    rows = []
    for config, (net, optimizer, _), step, ms in zip(configs, prepared, steps, times):
        measurable = device.type == "cuda" or not config[5]
        rows.append({"configuration": config[0], "step_ms": ms, "images_per_s": images.shape[0] * 1e3 / ms,
                     "peak_mb": peak_memory_mb(step, net, optimizer, device) if measurable else None})
    return rows


def add_speedups(rows):
    """Each measured row's images/s and peak memory relative to the first row (the baseline)."""
    base = rows[0]
    for r in rows:
        if r.get("images_per_s") is not None:
            r["speedup"] = r["images_per_s"] / base["images_per_s"]
            both = r["peak_mb"] is not None and base["peak_mb"]
            r["memory_ratio"] = r["peak_mb"] / base["peak_mb"] if both else None


def main(args):
    device = benchmark_device(args)
    criterion = CriterionOhemDSN(IGNORE_LABEL, args.ohem_thres, args.ohem_keep)
    initial = networks.build_model("ccnet", NUM_CLASSES, criterion=criterion, recurrence=args.recurrence,
                                   norm_layer=nn.BatchNorm2d, depth=args.depth)
    images, labels = synthetic_batch(args.batch, args.size, device, torch.Generator().manual_seed(0))

    configs = configurations(device, args.compile)
    measured = iter(measure(initial, [c for c in configs if len(c) > 2], images, labels, args, device))
    rows = [next(measured) if len(c) > 2 else {"configuration": c[0], "skipped": c[1]} for c in configs]
    add_speedups(rows)
    set_tf32(device, True)

    settings = {"model": "ccnet", "depth": args.depth, "recurrence": args.recurrence, "batch": args.batch,
                "crop": list(args.size), "ohem_thres": args.ohem_thres, "ohem_keep": args.ohem_keep,
                "repeat": args.repeat, "warmup": args.warmup}
    header = (f"{device_name(device)}, torch {torch.__version__}, {datetime.date.today()}: "
              f"CCNet-{args.depth} R={args.recurrence} training step, batch {args.batch}, "
              f"crop {args.size[0]}x{args.size[1]}, OHEM + DSN, SGD")
    print_table(header, rows, [("configuration", "configuration", ""), ("step_ms", "step ms", ".1f"),
                               ("images_per_s", "images/s", ".2f"), ("speedup", "x baseline", ".2f"),
                               ("peak_mb", "peak MiB", ".0f"), ("memory_ratio", "x memory", ".2f")])
    for r in rows:
        if "skipped" in r:
            print(f"{r['configuration']}: skipped ({r['skipped']})")
    if args.json:
        save_record(args.json, device, settings, rows)
    return rows


def get_args_parser():
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    sizes = parser.add_argument_group("sizes")
    sizes.add_argument("--batch", type=positive_int, default=None, help="images per step (default 1 on CPU, 2 on GPU)")
    sizes.add_argument("--size", type=size_pair, default=None,
                       help="crop HEIGHT,WIDTH (default 97,97 on CPU, 769,769 on GPU)")
    sizes.add_argument("--recurrence", type=int, default=2, help="criss-cross attention passes")
    sizes.add_argument("--depth", type=int, choices=tuple(networks.DEPTHS), default=101, help="ResNet depth")
    sizes.add_argument("--ohem-thres", type=float, default=0.7, help="OHEM probability threshold")
    sizes.add_argument("--ohem-keep", type=int, default=100000, help="OHEM keeps at least this many pixels")
    measurement = add_measurement_arguments(parser, "timed steps per row, median (default 3 CPU, 20 GPU)",
                                            "untimed rounds first, which also compile (default 1 CPU, 5 GPU)")
    measurement.add_argument("--compile", type=str2bool, default=None,
                             help="add a torch.compile row (1/0; default 1 on GPU, 0 on CPU)")
    add_json_argument(parser)
    return parser


CPU_DEFAULTS = {"batch": 1, "size": (97, 97), "compile": False, "repeat": 3, "warmup": 1}
GPU_DEFAULTS = {"batch": 2, "size": (769, 769), "compile": True, "repeat": 20, "warmup": 5}


def fill_defaults(args):
    """The CPU or GPU default of every option left unset."""
    return common.fill_defaults(args, CPU_DEFAULTS, GPU_DEFAULTS)


if __name__ == "__main__":
    exit_on_user_error(main)(fill_defaults(get_args_parser().parse_args()))
