"""Upstream's criss-cross attention (Serge-weihao/CCNet-Pure-Pytorch, CC.py), rewritten from its
published semantics: contiguous permuted copies of q, k and v, one bmm per row and per column,
differentiated by autograd through every intermediate. A peer formulation for the benchmarks and
the precision tests.
"""
import torch


def upstream_criss_cross(query, key, value):
    """query, key (B, Cq, H, W), value (B, C, H, W) -> (B, C, H, W); (i, j) is masked out of its column."""
    B, _, H, W = query.shape
    q_cols = query.permute(0, 3, 2, 1).contiguous().view(B * W, H, -1)   # (BW, H, Cq)
    q_rows = query.permute(0, 2, 3, 1).contiguous().view(B * H, W, -1)   # (BH, W, Cq)
    k_cols = key.permute(0, 3, 1, 2).contiguous().view(B * W, -1, H)     # (BW, Cq, H)
    k_rows = key.permute(0, 2, 1, 3).contiguous().view(B * H, -1, W)     # (BH, Cq, W)
    v_cols = value.permute(0, 3, 1, 2).contiguous().view(B * W, -1, H)   # (BW, C, H)
    v_rows = value.permute(0, 2, 1, 3).contiguous().view(B * H, -1, W)   # (BH, C, W)
    diag = torch.diag(torch.full((H,), float("-inf"), device=query.device)).unsqueeze(0)
    e_h = (torch.bmm(q_cols, k_cols) + diag).view(B, W, H, H).permute(0, 2, 1, 3)  # (B, H, W, H)
    e_w = torch.bmm(q_rows, k_rows).view(B, H, W, W)                               # (B, H, W, W)
    attn = torch.softmax(torch.cat([e_h, e_w], 3), dim=3)
    a_h = attn[..., :H].permute(0, 2, 1, 3).contiguous().view(B * W, H, H)
    a_w = attn[..., H:].contiguous().view(B * H, W, W)
    out_h = torch.bmm(v_cols, a_h.permute(0, 2, 1)).view(B, W, -1, H).permute(0, 2, 3, 1)
    out_w = torch.bmm(v_rows, a_w.permute(0, 2, 1)).view(B, H, -1, W).permute(0, 2, 1, 3)
    return out_h + out_w
