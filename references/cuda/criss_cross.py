"""The official CCNet's criss-cross op, ca_weight -> softmax -> ca_map, on the kernels of criss_cross.cu.

From Huang et al., "CCNet: Criss-Cross Attention for Semantic Segmentation" (ICCV 2019). This is the
published CUDA formulation, kept as a reference to compare CC.py against: the affinity lives in the
(N, H + W - 1, H, W) layout, the softmax runs over dim 1 in torch, and everything is float32.
CUDA tensors run the kernels on the current stream; CPU tensors run the host loops over the same
element functions (slow, meant for tests).
"""
import torch

from CC import compute_dtype
from references.cuda.build import load_library


def _launch(name, tensors, dims):
    """Call library entry `name` on float32 contiguous tensors (inputs, then outputs); dims = (N, C, H, W).

    CUDA tensors run on their own GPU and its current stream: the library, which links its own
    CUDA runtime, is given the device index, since torch's current device may be another GPU.
    """
    library = load_library()
    entry, device = getattr(library, name), tensors[0].device
    pointers = [t.data_ptr() for t in tensors]
    if device.type == "cuda":
        # torch.cuda.device restores torch's current device after the library switched it.
        with torch.cuda.device(device):
            code = entry(device.index, torch.cuda.current_stream(device).cuda_stream, *pointers, *dims)
    else:
        code = entry(-1, None, *pointers, *dims)
    if code != 0:
        raise RuntimeError(f"{name} failed: {library.cc_error_string(code).decode()}")


class _CrissCrossKernel(torch.autograd.Function):
    """A two-input op of the library: {op}_forward computes the output, {op}_backward both input gradients."""

    @staticmethod
    def run_forward(ctx, op, a, b, out, dims):
        """Fill out with {op}_forward(a, b) and keep what the backward needs; dims = (N, C, H, W)."""
        _launch(f"{op}_forward", [a, b, out], dims)
        ctx.op, ctx.dims = op, dims
        ctx.save_for_backward(a, b)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a, grad_b = torch.empty_like(a), torch.empty_like(b)
        _launch(f"{ctx.op}_backward", [grad.contiguous(), a, b, grad_a, grad_b], ctx.dims)
        return grad_a, grad_b


class CAWeight(_CrissCrossKernel):
    """ca_weight: t, f (N, C, H, W) float32 -> affinity (N, H + W - 1, H, W)."""

    @staticmethod
    def forward(ctx, t, f):
        n, _, h, w = t.shape
        return _CrissCrossKernel.run_forward(ctx, "cc_weight", t, f, t.new_empty(n, h + w - 1, h, w), t.shape)


class CAMap(_CrissCrossKernel):
    """ca_map: weight (N, H + W - 1, H, W), g (N, C, H, W) float32 -> out (N, C, H, W)."""

    @staticmethod
    def forward(ctx, weight, g):
        return _CrissCrossKernel.run_forward(ctx, "cc_map", weight, g, torch.empty_like(g), g.shape)


def criss_cross_cuda(query, key, value):
    """Criss-cross attention through the official CCNet op's kernels, the semantics of CC.criss_cross_attention.

    query, key: (B, Cq, H, W); value: (B, C, H, W) -> (B, C, H, W), computed in float32 and returned in
    CC.compute_dtype(query, key, value). Differentiable in all three.
    """
    dtype = compute_dtype(query, key, value)
    if value.device.type not in ("cuda", "cpu") or len({query.device, key.device, value.device}) != 1:
        raise ValueError("criss_cross_cuda expects query, key and value on one CUDA (or CPU) device, got "
                         f"{query.device}, {key.device}, {value.device}")
    with torch.autocast(value.device.type, enabled=False):
        t, f, g = (x.to(torch.float32).contiguous() for x in (query, key, value))
        weight = CAWeight.apply(t, f)  # (B, H + W - 1, H, W)
        attention = torch.softmax(weight, dim=1)
        out = CAMap.apply(attention, g)  # (B, C, H, W)
    return out.to(dtype)
