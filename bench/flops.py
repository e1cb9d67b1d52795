"""The paper's efficiency table measured: RCCA against the non-local block, and every model by its parts.

Parameters, FLOPs, peak memory and time of the recurrent criss-cross attention against the non-local
block, and of every model split into backbone, head and DSN head.

    python bench/flops.py                                  # the paper's sizes on the CPU
    python bench/flops.py --device cuda --json flops.json  # the same on a GPU
    python bench/flops.py --model ccnet --recurrence 1 --input-size 513,513 --num-classes 150

Rows: ``cca``, one CrissCrossAttention pass (its three 1x1 projections included); ``rcca-r1`` and
``rcca-r2``, that module applied once and twice with shared weights, the recurrent criss-cross
attention (RCCA) as the paper counts it (the passes only, not the 3x3 convolutions around them
that RCCA.RecurrentCrissCrossAttention adds);
``non-local``, the block of Wang et al. 2018 (references/non_local.py) at the same input: the
features CCNet's head attends over, layer4's 2048 channels reduced to a quarter, at the backbone's
output size. Then, for each --model, its parts and the whole network at the image size:
``backbone`` (the dilated ResNet-101 every model shares), ``dsn`` (the shared auxiliary head on
layer3), ``<model> head`` (on layer4) and ``<model>``.

FLOPs are counted at the dispatcher by torch.utils.flop_counter.FlopCounterMode, a multiply-add
as 2: every convolution and matrix product, the batched products inside CC.py's autograd Function
and its no-grad path included; element-wise work (softmax, norms, activations, additions) is not
counted, nor are the biases, which the author's formula counts (docs/benchmarks.md). ``flops`` is a forward without gradients (eval mode),
``train_flops`` a forward and backward with every parameter's gradient (and the input's, for the
parts that read features). Peak memory is that of the tensor storages allocated during the call
(bench.common.PeakTensorMemory, the same probe on every device), and on CUDA also the allocator's
peak; the weights are not counted. The train figures run in train mode except for the norm
layers, which use their running statistics: at batch 1, PSPNet's and DeepLabv3's pooled 1x1
branches hold one value per channel, which batch statistics cannot normalize. Times are medians,
strict fp32 (no TF32). The paper's figures (108 and 16.5 GFLOPs; 11x less GPU memory for RCCA R=2
than for the non-local block) are printed beside ours, labelled as the paper's.
"""
import datetime
import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import networks  # noqa: E402
from bench import common  # noqa: E402
from bench.common import (PeakTensorMemory, add_json_argument, add_measurement_arguments,  # noqa: E402
                          benchmark_device, cuda_peak_mb, median_ms, print_table, save_record, set_tf32)
from CC import CrissCrossAttention  # noqa: E402
from networks.resnet import ResNet  # noqa: E402
from references import NonLocalBlock  # noqa: E402
from utils.cli import ArgumentParser, non_negative_int, positive_int, size_pair  # noqa: E402
from utils.errors import exit_on_user_error  # noqa: E402
from utils.runtime import device_name  # noqa: E402

PAPER_FLOPS = {"non-local": 108e9, "rcca-r2": 16.5e9}  # speedinghzl/CCNet issue 2, at PAPER_INPUT
PAPER_INPUT = [1, 512, 97, 97]  # the RCCA's input of a 769x769 image
PAPER_MEMORY_RATIO = 11  # the abstract: RCCA (R=2) needs 11x less GPU memory than the non-local block
RCCA_CHANNELS = 2048 // 4  # CCNet's head reduces layer4's channels to a quarter before the attention


class Recurrent(nn.Module):
    """A module applied ``recurrence`` times with its weights shared: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, module, recurrence):
        super().__init__()
        self.module, self.recurrence = module, recurrence

    def forward(self, x):
        for _ in range(self.recurrence):
            x = self.module(x)
        return x


@dataclass
class Part:
    """What one row measures: call(*inputs) (default module(*inputs)), whose parameters (default the
    module's) are counted and get gradients; the inputs are features (gradient wanted) or an image."""
    name: str
    module: nn.Module
    inputs: tuple
    features: bool
    call: Callable = None
    parameters: list = None

    def __post_init__(self):
        self.call = self.call or self.module
        self.parameters = list(self.module.parameters()) if self.parameters is None else self.parameters


def backbone_part(model, image):
    """The row of a segmentation model's dilated ResNet alone: image -> (layer3, layer4) features."""
    parameters = [p for name, p in model.named_parameters() if not name.startswith(("head.", "dsn."))]
    return Part("backbone", model, (image,), False, functools.partial(ResNet.forward, model), parameters)


def total(outputs):
    """The sum of every element of a tensor or a list of tensors: a scalar to call backward on."""
    return sum(o.sum() for o in outputs) if isinstance(outputs, (list, tuple)) else outputs.sum()


def train_mode(module):
    """Put module in train mode, its norm layers in eval mode (running statistics)."""
    module.train()
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def passes(part):
    """(forward, train) closures of a part: a no-grad eval-mode forward; a forward and backward that
    leaves every parameter's gradient (and the features') freshly allocated."""
    inputs = [x.detach().requires_grad_(part.features) for x in part.inputs]

    @torch.no_grad()
    def forward():
        part.module.eval()
        return part.call(*inputs)

    def train():
        for tensor in part.parameters + inputs:
            tensor.grad = None
        train_mode(part.module)
        total(part.call(*inputs)).backward()

    return forward, train


def flops_and_peak(fn):
    """FLOPs (multiply-add = 2) of one call of fn, counted at the dispatcher, and the peak MiB of the
    tensor storages it allocates (both modes see the same calls)."""
    counter, tracker = FlopCounterMode(display=False), PeakTensorMemory()
    with counter, tracker:
        fn()
    return counter.get_total_flops(), tracker.peak / 2**20


def measure(part, device, repeat, warmup):
    """One row: name, input shape, params, flops, peaks and times of a part (see the module docstring)."""
    forward, train = passes(part)
    flops, forward_peak = flops_and_peak(forward)
    train_flops, train_peak = flops_and_peak(train)
    row = {"name": part.name, "input": list(part.inputs[0].shape),
           "params": sum(p.numel() for p in part.parameters),
           "flops": flops, "train_flops": train_flops, "forward_peak_mb": forward_peak, "train_peak_mb": train_peak}
    if row["input"] == PAPER_INPUT and part.name in PAPER_FLOPS:
        row["paper_flops"] = PAPER_FLOPS[part.name]
    if row["input"] == PAPER_INPUT and part.name == "rcca-r2":
        row["paper_memory_ratio"] = PAPER_MEMORY_RATIO
    if device.type == "cuda":
        row["forward_cuda_peak_mb"] = cuda_peak_mb(forward, device)
        row["train_cuda_peak_mb"] = cuda_peak_mb(train, device)
    row["forward_ms"] = median_ms(forward, device, repeat, warmup)
    row["train_ms"] = median_ms(train, device, repeat, warmup)
    return row


def attention_parts(features):
    """The paper's table at the RCCA's input features (B, C, h, w): cca, rcca-r1, rcca-r2, non-local."""
    channels = features.shape[1]
    cca = CrissCrossAttention(channels)
    modules = {"cca": cca, "rcca-r1": Recurrent(cca, 1), "rcca-r2": Recurrent(cca, 2),
               "non-local": NonLocalBlock(channels)}
    return [Part(name, module.to(features.device), (features,), True) for name, module in modules.items()]


def build(name, args, device):
    """The model registered as name with plain BatchNorm, on the device."""
    model = networks.build_model(name, args.num_classes, recurrence=args.recurrence, norm_layer=nn.BatchNorm2d)
    return model.to(device)


def compare(rows):
    """The non-local block's FLOPs and peaks over RCCA R=2's (the paper: 108 / 16.5 and 11x)."""
    by_name = {r["name"]: r for r in rows}
    non_local, rcca = by_name["non-local"], by_name["rcca-r2"]
    keys = ["flops", "forward_peak_mb", "train_peak_mb", "forward_cuda_peak_mb", "train_cuda_peak_mb"]
    return {key: non_local[key] / rcca[key] for key in keys if key in rcca}


def print_rows(header, rows):
    """The table, in GFLOPs, millions of parameters, MiB and ms, with the paper's GFLOPs beside ours."""
    shown = [dict(r, input="x".join(map(str, r["input"])), params_m=r["params"] / 1e6, gflops=r["flops"] / 1e9,
                  paper_gflops=r["paper_flops"] / 1e9 if "paper_flops" in r else None,
                  train_gflops=r["train_flops"] / 1e9) for r in rows]
    columns = [("name", "name", ""), ("input", "input", ""), ("params_m", "params M", ".3f"),
               ("gflops", "GFLOPs", ".2f"), ("paper_gflops", "paper's", ".1f"), ("train_gflops", "train GFLOPs", ".2f"),
               ("forward_peak_mb", "fwd MiB", ".1f"), ("train_peak_mb", "train MiB", ".1f")]
    if "forward_cuda_peak_mb" in rows[0]:
        columns += [("forward_cuda_peak_mb", "fwd CUDA MiB", ".1f"), ("train_cuda_peak_mb", "train CUDA MiB", ".1f")]
    columns += [("forward_ms", "fwd ms", ".1f"), ("train_ms", "train ms", ".1f")]
    print_table(header, shown, columns)


def main(args):
    device = benchmark_device(args)
    set_tf32(device, False)
    models = list(dict.fromkeys(args.model))  # each once, in the order given
    image = torch.randn(1, 3, *args.input_size, device=device)
    first = build(models[0], args, device).eval()
    with torch.no_grad():
        layer3, layer4 = ResNet.forward(first, image)  # (1, 1024, h, w), (1, 2048, h, w)
    features = torch.randn(1, RCCA_CHANNELS, *layer4.shape[2:], device=device)
    parts = attention_parts(features) + [backbone_part(first, image), Part("dsn", first.dsn, (layer3,), True)]
    for name in models:
        model = first if name == models[0] else build(name, args, device)
        parts += [Part(f"{name} head", model.head, (layer4,), True), Part(name, model, (image,), False)]
    rows = [measure(part, device, args.repeat, args.warmup) for part in parts]

    size = "x".join(map(str, args.input_size))
    header = (f"{device_name(device)}, torch {torch.__version__}, {datetime.date.today()}: image 1x3x{size}, "
              f"CCNet R={args.recurrence}, {args.num_classes} classes, fp32; FLOPs: multiply-add = 2")
    print_rows(header, rows)
    ratios = compare(rows)
    print(f"non-local / rcca-r2: {ratios['flops']:.2f}x the FLOPs, {ratios['forward_peak_mb']:.1f}x the forward "
          f"peak, {ratios['train_peak_mb']:.1f}x the train peak (tensor storages)"
          + (f"; CUDA allocator: {ratios['forward_cuda_peak_mb']:.1f}x forward, "
             f"{ratios['train_cuda_peak_mb']:.1f}x train" if device.type == "cuda" else ""))
    print(f"the paper's, at 1x512x97x97: {PAPER_FLOPS['non-local'] / PAPER_FLOPS['rcca-r2']:.2f}x the FLOPs "
          f"(108 / 16.5 GFLOPs, 84.7% fewer for RCCA), {PAPER_MEMORY_RATIO}x the GPU memory")
    if args.json:
        settings = {"models": models, "recurrence": args.recurrence, "input_size": list(args.input_size),
                    "num_classes": args.num_classes, "repeat": args.repeat, "warmup": args.warmup,
                    "non_local_over_rcca_r2": ratios}
        save_record(args.json, device, settings, rows)
    return rows


def get_args_parser():
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    models = parser.add_argument_group("models")
    models.add_argument("--model", choices=list(networks.MODELS), action="append", default=None,
                        help="a model to measure, repeatable (default ccnet on CPU, where a model at 769x769 takes "
                             "minutes, every model on GPU)")
    models.add_argument("--recurrence", type=non_negative_int, default=2, help="CCNet's criss-cross attention passes")
    models.add_argument("--num-classes", type=positive_int, default=19, help="classes the models predict")
    sizes = parser.add_argument_group("sizes")
    sizes.add_argument("--input-size", type=size_pair, default=(769, 769),
                       help="image HEIGHT,WIDTH (the paper's: 769,769); the attention rows read the backbone's "
                            "features of it (97x97)")
    add_measurement_arguments(parser, "timed calls per figure, median (default 1 on CPU, 10 on GPU)",
                              "untimed calls first (default 0 on CPU, 3 on GPU)")
    add_json_argument(parser)
    return parser


CPU_DEFAULTS = {"model": ["ccnet"], "repeat": 1, "warmup": 0}
GPU_DEFAULTS = {"model": list(networks.MODELS), "repeat": 10, "warmup": 3}


def fill_defaults(args):
    """The CPU or GPU default of every option left unset."""
    return common.fill_defaults(args, CPU_DEFAULTS, GPU_DEFAULTS)


if __name__ == "__main__":
    exit_on_user_error(main)(fill_defaults(get_args_parser().parse_args()))
