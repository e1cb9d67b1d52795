"""Precision check of the pure-PyTorch criss-cross attention against float64 and the CUDA reference.

    python check.py                 # on the GPU when there is one, else on the CPU
    python check.py --device cpu

1. Constant inputs (query = 1, key = 2, value = 3): the output must be exactly 3 and the gradient
   of the value exactly 1 (every position is attended by H + W - 1 positions with weight 1 / (H + W - 1)).
2. Random inputs: float32 output and gradients against a float64 ground truth computed by an
   independent formulation (einsums under plain autograd, references/einsum.py).
3. A short speed comparison (forward + backward).
Exits with status 1 when our op misses its tolerances.
"""
import sys

import torch

from bench.common import median_ms
from CC import criss_cross_attention
from references import criss_cross_cuda, cuda_reference_status, einsum_criss_cross
from utils.cli import ArgumentParser, exit_on_user_error
from utils.runtime import device_name, parse_device

REL_TOL = 1e-6


def constant_check(fn, device):
    """Run fn on the seed's constant inputs; returns (output, value gradient) in float32."""
    query = torch.ones(1, 8, 10, 10, device=device)
    key = torch.full((1, 8, 10, 10), 2.0, device=device)
    value = torch.full((1, 64, 10, 10), 3.0, device=device, requires_grad=True)
    out = fn(query, key, value)
    out.sum().backward()
    return out.detach(), value.grad


def random_check(fn, device, truth, inputs64, grad64):
    """Max abs and relative (norm) error of fn's float32 output and gradients against truth."""
    inputs = [x.float().to(device).requires_grad_() for x in inputs64]
    out = fn(*inputs)
    results = [out] + list(torch.autograd.grad(out, inputs, grad64.float().to(device)))
    return [((r.double().cpu() - t).abs().max().item(), ((r.double().cpu() - t).norm() / t.norm()).item())
            for r, t in zip(results, truth)]


def fwd_bwd_ms(fn, device, repeat=20):
    """Median forward + backward time of fn at (2, 512, 65, 65), query/key with 64 channels."""
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(2, c, 65, 65, generator=g).to(device).requires_grad_() for c in (64, 64, 512)]
    return median_ms(lambda: fn(*inputs).sum().backward(), device, repeat)


def describe(values):
    lo, hi = values.min().item(), values.max().item()
    return f"{lo:.10f}" if lo == hi else f"{lo:.10f} .. {hi:.10f}"


def main(args):
    device = parse_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    available, reason = cuda_reference_status()
    ops = {"CC (pure PyTorch)": criss_cross_attention}
    if device.type == "cuda" and available:
        ops["CUDA reference"] = criss_cross_cuda
    elif device.type == "cuda":
        print(f"CUDA reference: unavailable ({reason})")
    else:
        print(f"CUDA reference: not run on the CPU ({reason if not available else 'it needs a CUDA device'})")
    name = device_name(device)
    print(f"device: {name}, torch {torch.__version__}\n")
    failures = []

    print("1. Constant inputs: query = 1, key = 2 (1, 8, 10, 10), value = 3 (1, 64, 10, 10)")
    print("   expected: output exactly 3, gradient of the value exactly 1")
    for label, fn in ops.items():
        out, grad_v = constant_check(fn, device)
        exact = bool((out == 3).all()) and bool((grad_v == 1).all())
        print(f"   {label:<18} output {describe(out)}   value gradient {describe(grad_v)}   "
              f"{'exact' if exact else 'NOT exact'}")
        if fn is criss_cross_attention and not exact:
            failures.append("constant inputs are not exact")

    print("\n2. Random inputs, float32 against a float64 einsum formulation: query/key (2, 8, 33, 41), "
          "value (2, 64, 33, 41)")
    g = torch.Generator().manual_seed(0)
    inputs64 = [torch.randn(2, c, 33, 41, generator=g, dtype=torch.float64) for c in (8, 8, 64)]
    grad64 = torch.randn(2, 64, 33, 41, generator=g, dtype=torch.float64)
    truth_inputs = [x.clone().requires_grad_() for x in inputs64]
    truth_out = einsum_criss_cross(*truth_inputs)
    truth = [truth_out.detach()] + list(torch.autograd.grad(truth_out, truth_inputs, grad64))
    print(f"   {'':<18} {'':>14}" + "".join(f"{n:>22}" for n in ("output", "grad query", "grad key", "grad value")))
    for label, fn in ops.items():
        errors = random_check(fn, device, truth, inputs64, grad64)
        print(f"   {label:<18} {'max abs / rel':>14}" + "".join(f"{a:>12.2e} /{r:>8.1e}" for a, r in errors))
        if fn is criss_cross_attention and max(r for _, r in errors) >= REL_TOL:
            failures.append(f"random inputs exceed the relative tolerance {REL_TOL:g}")

    print("\n3. Speed, forward + backward at (2, 512, 65, 65), median")
    for label, fn in ops.items():
        print(f"   {label:<18} {fwd_bwd_ms(fn, device):8.2f} ms")

    if failures:
        print("\nFAILED: " + "; ".join(failures))
        sys.exit(1)
    print("\nPASSED: exact on constant inputs, within 1e-6 relative error of float64 on random inputs")


def get_args_parser():
    parser = ArgumentParser(description="Precision check of the criss-cross attention op.")
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when present)")
    return parser


if __name__ == "__main__":
    exit_on_user_error(main)(get_args_parser().parse_args())
