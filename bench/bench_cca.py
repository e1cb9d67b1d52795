"""Criss-cross attention formulations side by side: median time, peak memory, error vs float64.

    python bench/bench_cca.py                      # CPU at (2, 512, 65, 65)
    python bench/bench_cca.py --device cuda        # GPU at (4, 512, 97, 97), fp32
    python bench/bench_cca.py --device cuda --amp  # the same under bf16 autocast

Formulations: ours (CC.py) and those of references/: the seed's bmm/permute one, the einsum one
of mmcv >= 1.3.13, and the CUDA reference where it can be built.
Query and key have C // 8 channels, as in CCNet.
"""
import datetime
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import fill_defaults, median_ms, peak_mb, rel_err, save_record  # noqa: E402
from CC import criss_cross_attention  # noqa: E402
from references import criss_cross_cuda, cuda_reference_status, einsum_criss_cross, seed_criss_cross  # noqa: E402
from utils.cli import ArgumentParser, positive_int, size_pair  # noqa: E402
from utils.runtime import device_name  # noqa: E402


def main(args):
    device = torch.device(args.device)
    B, C = args.batch, args.channels
    H, W = args.size
    g = torch.Generator().manual_seed(0)
    inputs64 = [torch.randn(B, c, H, W, generator=g, dtype=torch.float64) for c in (C // 8, C // 8, C)]
    grad64 = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    truth_inputs = [x.to(device).requires_grad_() for x in inputs64]
    truth_out = criss_cross_attention(*truth_inputs)
    truth = [truth_out] + list(torch.autograd.grad(truth_out, truth_inputs, grad64.to(device)))
    del truth_inputs, truth_out

    inputs = [x.float().to(device).requires_grad_() for x in inputs64]
    grad_out = grad64.float().to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.amp else nullcontext()

    formulations = {"ours (CC.py)": criss_cross_attention, "seed bmm/permute": seed_criss_cross,
                    "mmcv einsum": einsum_criss_cross}
    available, reason = cuda_reference_status()
    if device.type == "cuda" and available:
        formulations["CUDA reference"] = criss_cross_cuda
    elif device.type == "cuda":
        print(f"CUDA reference unavailable: {reason}")

    rows = []
    for name, fn in formulations.items():
        def forward():
            with torch.no_grad(), autocast:
                return fn(*inputs)

        def forward_backward():
            with autocast:
                out = fn(*inputs)
            return torch.autograd.grad(out, inputs, grad_out.to(out.dtype))

        with autocast:
            out = fn(*inputs)
        results = [out] + list(torch.autograd.grad(out, inputs, grad_out.to(out.dtype)))
        errors = [rel_err(r, t) for r, t in zip(results, truth)]
        del out, results
        rows.append({"formulation": name,
                     "forward_ms": median_ms(forward, device, args.repeat),
                     "forward_backward_ms": median_ms(forward_backward, device, args.repeat),
                     "peak_mb": peak_mb(forward_backward, device),
                     "rel_err_out": errors[0], "rel_err_grad_q": errors[1],
                     "rel_err_grad_k": errors[2], "rel_err_grad_v": errors[3]})

    name = device_name(device)
    precision = "bf16 autocast" if args.amp else "fp32"
    header = f"{name}, torch {torch.__version__}, {datetime.date.today()}, ({B}, {C}, {H}, {W}), {precision}"
    print(header)
    print(f"{'formulation':<18} {'fwd ms':>9} {'fwd+bwd ms':>11} {'peak MiB':>9} {'err out':>9} "
          f"{'err dq':>9} {'err dk':>9} {'err dv':>9}")
    for r in rows:
        print(f"{r['formulation']:<18} {r['forward_ms']:>9.2f} {r['forward_backward_ms']:>11.2f} "
              f"{r['peak_mb']:>9.1f} {r['rel_err_out']:>9.1e} {r['rel_err_grad_q']:>9.1e} "
              f"{r['rel_err_grad_k']:>9.1e} {r['rel_err_grad_v']:>9.1e}")
    if args.json:
        save_record(args.json, device, {"shape": [B, C, H, W], "precision": precision, "repeat": args.repeat}, rows)


def get_args_parser():
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--batch", type=positive_int, default=None, help="batch size (default 2 on CPU, 4 on GPU)")
    parser.add_argument("--channels", type=int, default=512, help="value channels; query/key get C // 8")
    parser.add_argument("--size", type=size_pair, default=None, help="H,W (default 65,65 on CPU, 97,97 on GPU)")
    parser.add_argument("--amp", action="store_true", help="run every formulation under bf16 autocast")
    parser.add_argument("--repeat", type=positive_int, default=None, help="timed runs per figure (median)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return parser


if __name__ == "__main__":
    main(fill_defaults(get_args_parser().parse_args(), cpu={"batch": 2, "size": (65, 65), "repeat": 7},
                       gpu={"batch": 4, "size": (97, 97), "repeat": 50}))
