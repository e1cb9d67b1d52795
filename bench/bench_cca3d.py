"""3D criss-cross attention formulations side by side: median time, peak memory, error vs float64.

    python bench/bench_cca3d.py                            # CPU at (2, 64, 32, 48, 40)
    python bench/bench_cca3d.py --size 48,64,56            # a larger volume
    python bench/bench_cca3d.py --device cuda --json out.json

Formulations: ours (CC3D.py) and upstream's three (references/upstream_3d.py). Query and key have
C // 8 channels, as in CCNet. Times are medians of interleaved rounds (every formulation once per
round), so that a load change on a shared machine hits them alike; the error is the relative norm
error of the float32 output and gradients against ours in float64.
"""
import datetime
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import common  # noqa: E402
from bench.common import (ERROR_COLUMNS, add_json_argument, add_measurement_arguments, attention_rows,  # noqa: E402
                          benchmark_device, print_table, save_record)
from CC3D import criss_cross_attention_3d  # noqa: E402
from references import upstream_criss_cross_3d, upstream_criss_cross_3d1, upstream_criss_cross_3d2  # noqa: E402
from utils.cli import ArgumentParser, positive_int, size_triple  # noqa: E402
from utils.errors import exit_on_user_error  # noqa: E402
from utils.runtime import device_name  # noqa: E402

FORMULATIONS = {"ours (CC3D.py)": criss_cross_attention_3d,
                "upstream CrissCrossAttention3D": upstream_criss_cross_3d,
                "upstream CrissCrossAttention3D1": upstream_criss_cross_3d1,
                "upstream CrissCrossAttention3D2": upstream_criss_cross_3d2}


def main(args):
    device = benchmark_device(args)
    B, C, size = args.batch, args.channels, args.size
    g = torch.Generator().manual_seed(0)
    inputs64 = [torch.randn(B, c, *size, generator=g, dtype=torch.float64) for c in (C // 8, C // 8, C)]
    grad64 = torch.randn(B, C, *size, generator=g, dtype=torch.float64)
    rows = attention_rows(FORMULATIONS, criss_cross_attention_3d, inputs64, grad64, device, args.repeat, args.warmup)

    header = (f"{device_name(device)}, torch {torch.__version__}, {datetime.date.today()}: 3D criss-cross "
              f"attention at ({B}, {C}, {size[0]}, {size[1]}, {size[2]}), fp32, median of {args.repeat} rounds")
    print_table(header, rows, [("formulation", "formulation", ""), ("forward_ms", "fwd ms", ".1f"),
                               ("forward_backward_ms", "fwd+bwd ms", ".1f"), ("forward_peak_mb", "fwd MiB", ".1f"),
                               ("peak_mb", "fwd+bwd MiB", ".1f"), *ERROR_COLUMNS])
    if args.json:
        save_record(args.json, device, {"shape": [B, C, *size], "precision": "fp32", "repeat": args.repeat,
                                        "warmup": args.warmup}, rows)
    return rows


def get_args_parser():
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    sizes = parser.add_argument_group("sizes")
    sizes.add_argument("--batch", type=positive_int, default=2, help="volumes per batch")
    sizes.add_argument("--channels", type=positive_int, default=64, help="value channels; query/key get C // 8")
    sizes.add_argument("--size", type=size_triple, default=None,
                       help="D1,D2,D3 (default 32,48,40 on CPU, 64,96,80 on GPU)")
    add_measurement_arguments(parser, "timed rounds, median (default 5 CPU, 20 GPU)",
                              "untimed rounds first (default 1 CPU, 3 GPU)")
    add_json_argument(parser)
    return parser


CPU_DEFAULTS = {"size": (32, 48, 40), "repeat": 5, "warmup": 1}
GPU_DEFAULTS = {"size": (64, 96, 80), "repeat": 20, "warmup": 3}


def fill_defaults(args):
    """The CPU or GPU default of every option left unset."""
    return common.fill_defaults(args, CPU_DEFAULTS, GPU_DEFAULTS)


if __name__ == "__main__":
    exit_on_user_error(main)(fill_defaults(get_args_parser().parse_args()))
