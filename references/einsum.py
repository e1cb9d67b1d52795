"""Criss-cross attention as einsums under plain autograd, the formulation of mmcv >= 1.3.13.

Independent of CC.py's hand-written backward: the float64 ground truth of check.py and a peer
formulation in bench/bench_cca.py.
"""
import torch


def einsum_criss_cross(query, key, value):
    """query, key (B, Cq, H, W), value (B, C, H, W) -> (B, C, H, W); (i, j) is masked out of its column."""
    H = query.shape[2]
    diag = torch.diag(torch.full((H,), float("-inf"), device=query.device, dtype=query.dtype))
    e_h = (torch.einsum("bchw,bciw->bwhi", query, key) + diag).transpose(1, 2)  # (B, H, W, H)
    e_w = torch.einsum("bchw,bchj->bhwj", query, key)                          # (B, H, W, W)
    attn = torch.softmax(torch.cat([e_h, e_w], dim=-1), dim=-1)
    out = torch.einsum("bciw,bhwi->bchw", value, attn[..., :H])
    return out + torch.einsum("bchj,bhwj->bchw", value, attn[..., H:])
