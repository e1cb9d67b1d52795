"""Criss-cross attention formulations side by side: median time, peak memory, error vs float64.

    python bench/bench_cca.py                      # CPU at (2, 512, 65, 65)
    python bench/bench_cca.py --device cuda        # GPU at (4, 512, 97, 97), strict fp32 (TF32 off)
    python bench/bench_cca.py --device cuda --amp  # bf16 inputs under bf16 autocast, as in a model under --amp

Formulations: ours (CC.py), ours under torch.compile (on the GPU by default), and those of
references/: upstream's bmm/permute one, the einsum one of mmcv >= 1.3.13, and the CUDA reference
where it can be built. Query and key have C // 8 channels, as in CCNet.

The forward's memory-bandwidth floor is the time to read query, key and value once and write the
output once, in the inputs' dtype (float32, or bfloat16 under --amp), at the bandwidth of a large
device-to-device copy measured in the same run. "x best public" is the fastest of upstream's and the
einsum formulation's forward + backward time over the row's. The formulations are timed in
interleaved rounds, so that a change of the machine's load hits them alike.
"""
import datetime
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (ERROR_COLUMNS, add_json_argument, add_measurement_arguments, attention_rows,  # noqa: E402
                          fill_defaults, median_ms, print_table, save_record, set_tf32)
from CC import criss_cross_attention  # noqa: E402
from references import criss_cross_cuda, cuda_reference_status, einsum_criss_cross, upstream_criss_cross  # noqa: E402
from utils.cli import ArgumentParser, positive_int, size_pair, str2bool  # noqa: E402
from utils.runtime import device_name  # noqa: E402


PUBLIC = ("upstream bmm/permute", "mmcv einsum")
COMPILED = "ours, torch.compile"


def copy_bandwidth_gb_s(device, repeat):
    """Bandwidth of a large device-to-device float32 copy (1 GiB on a GPU, 128 MiB on the CPU):
    bytes read plus bytes written per second, in GB/s."""
    src = torch.randn((256 if device.type == "cuda" else 32) * 2**20, device=device)
    dst = torch.empty_like(src)
    return 2 * src.nbytes / median_ms(lambda: dst.copy_(src), device, repeat) / 1e6


def forward_floor_ms(shape, itemsize, bandwidth_gb_s):
    """Milliseconds to read query, key (C // 8 channels each) and value and write the output once."""
    B, C, H, W = shape
    return (2 * (C // 8) + 2 * C) * B * H * W * itemsize / bandwidth_gb_s / 1e6


def main(args):
    device = torch.device(args.device)
    set_tf32(device, False)
    B, C = args.batch, args.channels
    H, W = args.size
    dtype = torch.bfloat16 if args.amp else torch.float32
    g = torch.Generator().manual_seed(0)
    # Drawn in float64 and rounded to the inputs' dtype, so the errors are the formulations' own.
    inputs64 = [torch.randn(B, c, H, W, generator=g, dtype=torch.float64).to(dtype).double()
                for c in (C // 8, C // 8, C)]
    grad64 = torch.randn(B, C, H, W, generator=g, dtype=torch.float64).to(dtype).double()

    formulations = {"ours (CC.py)": criss_cross_attention}
    if args.compile:
        formulations[COMPILED] = torch.compile(criss_cross_attention)
    formulations.update({PUBLIC[0]: upstream_criss_cross, PUBLIC[1]: einsum_criss_cross})
    available, reason = cuda_reference_status()
    if device.type == "cuda" and available:
        formulations["CUDA reference"] = criss_cross_cuda
    elif device.type == "cuda":
        print(f"CUDA reference unavailable: {reason}")

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp)

    rows = attention_rows(formulations, criss_cross_attention, inputs64, grad64, device, args.repeat, warmup=2,
                          dtype=dtype, autocast=autocast, unmeasured=() if device.type == "cuda" else (COMPILED,))

    bandwidth = copy_bandwidth_gb_s(device, args.repeat)
    floor = forward_floor_ms((B, C, H, W), dtype.itemsize, bandwidth)
    best_public = min(r["forward_backward_ms"] for r in rows if r["formulation"] in PUBLIC)
    for r in rows:
        r["x_floor"] = r["forward_ms"] / floor
        r["x_best_public"] = best_public / r["forward_backward_ms"]

    precision = "bf16 autocast" if args.amp else "fp32 (TF32 off)"
    header = (f"{device_name(device)}, torch {torch.__version__}, {datetime.date.today()}, ({B}, {C}, {H}, {W}), "
              f"{precision}; copy bandwidth {bandwidth:.0f} GB/s, forward floor {floor * 1e3:.1f} us")
    print_table(header, rows, [("formulation", "formulation", ""), ("forward_ms", "fwd ms", ".3f"),
                           ("x_floor", "x floor", ".1f"), ("forward_backward_ms", "fwd+bwd ms", ".3f"),
                           ("x_best_public", "x best public", ".2f"), ("peak_mb", "peak MiB", ".1f"),
                           *ERROR_COLUMNS])
    if args.json:
        save_record(args.json, device, {"shape": [B, C, H, W], "precision": precision, "repeat": args.repeat,
                                        "copy_bandwidth_gb_s": bandwidth, "forward_floor_ms": floor}, rows)
    return rows


def get_args_parser():
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    sizes = parser.add_argument_group("sizes")
    sizes.add_argument("--batch", type=positive_int, default=None, help="batch size (default 2 on CPU, 4 on GPU)")
    sizes.add_argument("--channels", type=int, default=512, help="value channels; query/key get C // 8")
    sizes.add_argument("--size", type=size_pair, default=None, help="H,W (default 65,65 on CPU, 97,97 on GPU)")
    measurement = add_measurement_arguments(parser, "timed runs per figure, median (default 7 CPU, 50 GPU)")
    measurement.add_argument("--amp", action="store_true", help="run every formulation under bf16 autocast")
    measurement.add_argument("--compile", type=str2bool, default=None,
                             help="add a torch.compile row of ours (1/0; default 1 on GPU, 0 on CPU)")
    add_json_argument(parser)
    return parser


CPU_DEFAULTS = {"batch": 2, "size": (65, 65), "repeat": 7, "compile": False}
GPU_DEFAULTS = {"batch": 4, "size": (97, 97), "repeat": 50, "compile": True}


if __name__ == "__main__":
    main(fill_defaults(get_args_parser().parse_args(), cpu=CPU_DEFAULTS, gpu=GPU_DEFAULTS))
