"""Precision check of the pure-PyTorch criss-cross attention against float64 and the CUDA reference.

    python check.py                 # on the GPU when there is one, else on the CPU
    python check.py --device cpu

1. Constant inputs (query = 1, key = 2, value = 3): the output must be exactly 3 and the gradient
   of the value exactly 1 (every position is attended by H + W - 1 positions with weight 1 / (H + W - 1)).
2. Random inputs: float32 output and gradients against a float64 ground truth computed by an
   independent formulation (einsums under plain autograd, references/einsum.py).
3. A short speed comparison (forward + backward).
4. The 3D op (CC3D.py) on volumes: the constant inputs at (6, 12, 16), where each voxel attends to
   6 + 12 + 16 - 2 = 32 voxels, so that the weights 1/32 and their sums are exact in float32; and
   random inputs against a float64 ground truth from upstream's 3D formulation under plain autograd
   (references/upstream_3d.py).
Exits with status 1 when our ops miss their tolerances.
"""
import sys

import torch

from bench.common import float64_truth, median_ms
from CC import criss_cross_attention
from CC3D import criss_cross_attention_3d
from references import criss_cross_cuda, cuda_reference_status, einsum_criss_cross, upstream_criss_cross_3d
from utils.cli import ArgumentParser
from utils.errors import exit_on_user_error
from utils.runtime import device_name, parse_device

REL_TOL = 1e-6


def constant_check(fn, device, size=(10, 10)):
    """Run fn on upstream's constant inputs of spatial size `size`; returns (output, value gradient) in float32."""
    query = torch.ones(1, 8, *size, device=device)
    key = torch.full((1, 8, *size), 2.0, device=device)
    value = torch.full((1, 64, *size), 3.0, device=device, requires_grad=True)
    out = fn(query, key, value)
    out.sum().backward()
    return out.detach(), value.grad


def random_inputs(size, seed=0):
    """Query, key (2, 8, *size), value and an upstream gradient (2, 64, *size), float64."""
    g = torch.Generator().manual_seed(seed)
    inputs64 = [torch.randn(2, c, *size, generator=g, dtype=torch.float64) for c in (8, 8, 64)]
    return inputs64, torch.randn(2, 64, *size, generator=g, dtype=torch.float64)


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


def report_constant(label, fn, device, size=(10, 10)):
    """Print fn's line of the constant-input check; returns whether output and value gradient are exact."""
    out, grad_v = constant_check(fn, device, size)
    exact = bool((out == 3).all()) and bool((grad_v == 1).all())
    print(f"   {label:<18} output {describe(out)}   value gradient {describe(grad_v)}   "
          f"{'exact' if exact else 'NOT exact'}")
    return exact


def report_random(label, fn, device, truth, inputs64, grad64):
    """Print fn's line of max abs / relative errors against truth; returns the largest relative error."""
    errors = random_check(fn, device, truth, inputs64, grad64)
    print(f"   {label:<18} {'max abs / rel':>14}" + "".join(f"{a:>12.2e} /{r:>8.1e}" for a, r in errors))
    return max(r for _, r in errors)


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
        if not report_constant(label, fn, device) and fn is criss_cross_attention:
            failures.append("constant inputs are not exact")

    print("\n2. Random inputs, float32 against a float64 einsum formulation: query/key (2, 8, 33, 41), "
          "value (2, 64, 33, 41)")
    inputs64, grad64 = random_inputs((33, 41))
    truth = float64_truth(einsum_criss_cross, inputs64, grad64)
    print(f"   {'':<18} {'':>14}" + "".join(f"{n:>22}" for n in ("output", "grad query", "grad key", "grad value")))
    for label, fn in ops.items():
        if report_random(label, fn, device, truth, inputs64, grad64) >= REL_TOL and fn is criss_cross_attention:
            failures.append(f"random inputs exceed the relative tolerance {REL_TOL:g}")

    print("\n3. Speed, forward + backward at (2, 512, 65, 65), median")
    for label, fn in ops.items():
        print(f"   {label:<18} {fwd_bwd_ms(fn, device):8.2f} ms")

    print("\n4. 3D op (CC3D.py), constant inputs: query = 1, key = 2 (1, 8, 6, 12, 16), value = 3 (1, 64, 6, 12, 16)")
    if not report_constant("CC3D", criss_cross_attention_3d, device, (6, 12, 16)):
        failures.append("3D constant inputs are not exact")

    print("\n5. 3D op, random inputs, float32 against upstream's 3D formulation in float64: query/key "
          "(2, 8, 11, 13, 9), value (2, 64, 11, 13, 9)")
    inputs64, grad64 = random_inputs((11, 13, 9), seed=1)
    truth = float64_truth(upstream_criss_cross_3d, inputs64, grad64)
    if report_random("CC3D", criss_cross_attention_3d, device, truth, inputs64, grad64) >= REL_TOL:
        failures.append(f"3D random inputs exceed the relative tolerance {REL_TOL:g}")

    if failures:
        print("\nFAILED: " + "; ".join(failures))
        sys.exit(1)
    print("\nPASSED: 2D and 3D exact on constant inputs, within 1e-6 relative error of float64 on random inputs")


def get_args_parser():
    parser = ArgumentParser(description="Precision check of the 2D and 3D criss-cross attention ops.")
    device = parser.add_argument_group("device")
    device.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when present)")
    return parser


if __name__ == "__main__":
    exit_on_user_error(main)(get_args_parser().parse_args())
