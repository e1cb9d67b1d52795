"""Criss-cross attention in pure PyTorch.

From Huang et al., "CCNet: Criss-Cross Attention for Semantic Segmentation" (ICCV 2019).
Every position (i, j) attends to the H + W - 1 positions of its row i and its column j
(itself counted once, as in the official CCNet's CUDA op) with one softmax over all of them.

The op is a custom ``autograd.Function`` whose backward is written by hand: it keeps q, k, v,
the (B, H, W, H + W - 1)-sized attention and one transposed copy of v instead of every
intermediate of the permute/matmul graph, and computes each gradient with one batched matmul
per direction.
"""
from collections import OrderedDict

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

__all__ = ["criss_cross_attention", "CrissCrossAttention", "compute_dtype", "energy_dtype"]


def _rows(x):
    """(B, C, H, W) -> (B, H, C, W) contiguous: one (C, W) matrix per image row."""
    return x.transpose(1, 2).contiguous()


def _cols(x):
    """(B, C, H, W) -> (B, W, C, H) contiguous: one (C, H) matrix per image column."""
    return x.permute(0, 3, 1, 2).contiguous()


def _row_bmm(x, y):
    """x (B, H, M, K) @ y (B, H, K, N) -> (B, H, M, N) contiguous, one bmm per image.

    The row views x of a (B, C, H, W) tensor (x.transpose(1, 2) or its .mT) are dense per image
    row but not mergeable over (B, H), so one batched matmul would copy them; a bmm per image
    reads them in place. y must be contiguous: bmm with a transposed, strided right operand is slow.
    """
    out = x.new_empty(*x.shape[:3], y.shape[3])
    for b in range(x.shape[0]):
        torch.bmm(x[b], y[b], out=out[b])
    return out


def _join(row_part, col_part, like):
    """row_part (B, H, C, W) + col_part (B, W, C, H) -> (B, C, H, W) in like's memory format."""
    rows, cols = row_part.transpose(1, 2), col_part.permute(0, 2, 3, 1)
    if torch.compiler.is_compiling():  # no out= while traced: see _attention
        return torch.empty_like(like).copy_(rows).add_(cols)
    return torch.add(rows, cols, out=torch.empty_like(like))


def energy_dtype(dtype):
    """The dtype of the energies q.k and their softmax for inputs of ``dtype``: float32 for the half
    types (float16 energies overflow past 65504), otherwise ``dtype`` itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _attention(q_rows, k_rows, q_cols, k_cols):
    """Joint softmax over each position's row and column.

    q_rows, k_rows: (B, H, Cq, W); q_cols, k_cols: (B, W, Cq, H). Returns a_row (B, H, W, W) indexed
    [b, i, j, w] and a_col (B, W, H, H) indexed [b, j, i, h], both contiguous in the inputs' dtype;
    a_col[b, j, i, i] = 0 so that (i, j) counts once. For half inputs the energies q.k are float32
    (float16 overflows past 65504). The softmax runs in place in the energy buffers, so one
    energy-sized buffer is alive besides the attention returned.
    """
    dtype, stat = q_rows.dtype, energy_dtype(q_rows.dtype)
    a_row = q_rows.mT.to(stat) @ k_rows.to(stat)  # (B, H, W, W) energies
    a_col = q_cols.mT.to(stat) @ k_cols.to(stat)  # (B, W, H, H) energies
    diagonal = torch.arange(a_col.shape[-1], device=a_col.device)
    a_col[..., diagonal, diagonal] = float("-inf")  # an index_put, which the ONNX exporter converts
    # The row part always holds (i, j) itself, so every maximum is finite.
    peak = torch.maximum(a_row.amax(-1), a_col.amax(-1).mT)  # (B, H, W)
    if torch.compiler.is_compiling():
        # Out of place while traced: the compiler fuses these passes into one kernel anyway, and
        # torch 2.11 traces the Function's forward with autograd on, which rejects out= and in-place
        # changes of what a backward saves (torch 2.13 traces either form).
        a_row = (a_row - peak.unsqueeze(-1)).exp()
        a_col = (a_col - peak.mT.unsqueeze(-1)).exp()
        total = a_row.sum(-1) + a_col.sum(-1).mT  # (B, H, W)
        return (a_row / total.unsqueeze(-1)).to(dtype), (a_col / total.mT.unsqueeze(-1)).to(dtype)
    a_row.sub_(peak.unsqueeze(-1)).exp_()
    a_col.sub_(peak.mT.unsqueeze(-1)).exp_()
    total = a_row.sum(-1) + a_col.sum(-1).mT  # (B, H, W)
    a_row = a_row.div_(total.unsqueeze(-1)).to(dtype)
    a_col = a_col.div_(total.mT.unsqueeze(-1)).to(dtype)
    return a_row, a_col


def _inference(query, key, value, chunks=8):
    """The op's forward when no gradient is needed: q, k (B, Cq, H, W), v (B, C, H, W) -> out
    (B, C, H, W) and the attention a_row, a_col as _attention returns it.

    The column products go into the output 1/chunks of the channels at a time, the row products
    1/chunks of the rows at a time, so besides the attention and the output only temporaries of
    1/chunks of v's size are alive.
    """
    a_row, a_col = _attention(_rows(query), _rows(key), _cols(query), _cols(key))
    out = torch.empty_like(value)
    channels, height = value.shape[1:3]
    channel_step, row_step = -(-channels // chunks), -(-height // chunks)
    # One statement per slice, so that its temporaries are freed before the next slice's.
    for b in range(value.shape[0]):
        for c in range(0, channels, channel_step):
            part = slice(c, c + channel_step)
            # (W, c, H) @ (W, H, H) -> (W, c, H), stored as (c, H, W)
            out[b, part] = (value[b, part].permute(2, 0, 1).contiguous() @ a_col[b].mT).permute(1, 2, 0)
        for i in range(0, height, row_step):
            rows = slice(i, i + row_step)
            # (h, C, W) @ (h, W, W) -> (h, C, W), added as (C, h, W)
            out[b, :, rows] += torch.bmm(value[b, :, rows].transpose(0, 1),
                                         a_row[b, rows].mT.contiguous()).transpose(0, 1)
    return out, a_row, a_col


def _forward(query, key, value, row_matmul):
    """The op's forward: q, k (B, Cq, H, W), v (B, C, H, W) -> out (B, C, H, W), v's column layout
    (B, W, C, H) and the attention a_row (B, H, W, W), a_col (B, W, H, H) as _attention returns it.

    row_matmul multiplies the row layouts: _row_bmm in the autograd Function, one batched matmul
    (traceable for any batch size) when the model is exported.
    """
    a_row, a_col = _attention(_rows(query), _rows(key), _cols(query), _cols(key))
    row_part = row_matmul(value.transpose(1, 2), a_row.mT.contiguous())  # (B, H, C, W)
    v_cols = _cols(value)  # (B, W, C, H)
    return _join(row_part, v_cols @ a_col.mT, value), v_cols, a_row, a_col


class _CrissCrossFunction(torch.autograd.Function):
    """q, k (B, Cq, H, W), v (B, C, H, W) -> out (B, C, H, W), a_row, a_col, with a hand-written backward.

    Kept for backward: q, k, v, the attention and v's column layout (the H/W-transposed copy);
    row products read v and grad_out in place. Each v-sized temporary is freed as soon as it is
    consumed, which keeps the peak below that of the autograd formulations. The attention is
    returned as well (not differentiable), for the attention hooks of CrissCrossAttention.
    """

    @staticmethod
    def forward(ctx, query, key, value):
        out, v_cols, a_row, a_col = _forward(query, key, value, _row_bmm)
        ctx.save_for_backward(query, key, value, v_cols, a_row, a_col)
        ctx.mark_non_differentiable(a_row, a_col)
        return out, a_row, a_col

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, _grad_a_row, _grad_a_col):
        query, key, value, v_cols, a_row, a_col = ctx.saved_tensors
        need_qk = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_q = grad_k = grad_v = None
        g_cols = _cols(grad_out)  # (B, W, C, H)
        da_col = g_cols.mT @ v_cols if need_qk else None  # (B, W, H, H)
        gv_col = g_cols @ a_col if ctx.needs_input_grad[2] else None  # (B, W, C, H)
        del g_cols, v_cols
        g_rows = grad_out.transpose(1, 2)  # (B, H, C, W), a view
        da_row = _row_bmm(g_rows.mT, value.transpose(1, 2)) if need_qk else None  # (B, H, W, W)
        if ctx.needs_input_grad[2]:
            grad_v = _join(_row_bmm(g_rows, a_row), gv_col, value)
        del gv_col
        if need_qk:
            stat = energy_dtype(a_row.dtype)
            # Softmax backward: de = a * (dL/da - sum(a * dL/da)) over the H + W - 1 entries.
            ar, ac, da_row, da_col = a_row.to(stat), a_col.to(stat), da_row.to(stat), da_col.to(stat)
            dot = (ar * da_row).sum(-1) + (ac * da_col).sum(-1).transpose(1, 2)  # (B, H, W)
            de_row = (ar * (da_row - dot.unsqueeze(-1))).to(query.dtype)
            de_col = (ac * (da_col - dot.transpose(1, 2).unsqueeze(-1))).to(query.dtype)
            if ctx.needs_input_grad[0]:
                grad_q = _join(_rows(key) @ de_row.mT, _cols(key) @ de_col.mT, query)
            if ctx.needs_input_grad[1]:
                grad_k = _join(_rows(query) @ de_row, _cols(query) @ de_col, key)
        return grad_q, grad_k, grad_v


def compute_dtype(query, key, value):
    """Check query, key (B, Cq, H, W) and value (B, C, H, W); return the dtype to compute in.

    Under torch.autocast that is the autocast dtype (float64 inputs excepted, as autocast leaves
    them alone); otherwise the inputs' common dtype.
    """
    if query.dim() != 4 or key.shape != query.shape or value.dim() != 4 \
            or value.shape[0] != query.shape[0] or value.shape[2:] != query.shape[2:]:
        raise ValueError("criss-cross attention expects query, key (B, Cq, H, W) and value (B, C, H, W), "
                         f"got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    dtype = torch.promote_types(torch.promote_types(query.dtype, key.dtype), value.dtype)
    device_type = value.device.type
    if torch.is_autocast_enabled(device_type) and dtype != torch.float64:
        return torch.get_autocast_dtype(device_type)
    return dtype


def criss_cross_attention(query, key, value, return_attention=False):
    """Criss-cross attention without projections or residual.

    query, key: (B, Cq, H, W); value: (B, C, H, W) -> (B, C, H, W), where
    out[:, :, i, j] = sum over the H + W - 1 positions p of row i and column j of
    softmax_p(<query[:, :, i, j], key[:, :, p]>) * value[:, :, p].
    The inputs are cast to compute_dtype(query, key, value). With return_attention, returns
    (out, (a_row, a_col)): the softmax weights, a_row (B, H, W, W) of (i, j) on (i, w) indexed
    [b, i, j, w] and a_col (B, W, H, H) of (i, j) on (h, j) indexed [b, j, i, h], a_col[b, j, i, i] = 0.

    While torch.export (and so the ONNX exporter) traces it, the forward runs as plain batched
    tensor ops instead of the autograd Function, whose per-image loop would fix the batch size.
    """
    dtype = compute_dtype(query, key, value)
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (query, key, value))
    with torch.autocast(value.device.type, enabled=False):
        inputs = query.to(dtype), key.to(dtype), value.to(dtype)
        if torch.compiler.is_exporting():
            out, _, a_row, a_col = _forward(*inputs, torch.matmul)
        elif needs_grad:
            out, a_row, a_col = _CrissCrossFunction.apply(*inputs)
        else:
            out, a_row, a_col = _inference(*inputs)
    return (out, (a_row, a_col)) if return_attention else out


class CrissCrossAttention(nn.Module):
    """The criss-cross attention module of CCNet: gamma * CCA(q(x), k(x), v(x)) + x.

    x: (B, in_dim, H, W) -> (B, in_dim, H, W). The parameter names match published CCNet
    checkpoints (``head.cca.query_conv.weight`` ...); gamma starts at zero, so the module
    starts as the identity. register_attention_hook() shows each forward's attention weights.
    """

    def __init__(self, in_dim):
        super().__init__()
        self.query_conv = nn.Conv2d(in_dim, in_dim // 8, kernel_size=1)
        self.key_conv = nn.Conv2d(in_dim, in_dim // 8, kernel_size=1)
        self.value_conv = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self._attention_hooks = OrderedDict()  # RemovableHandle keeps a weak reference to it

    def register_attention_hook(self, hook):
        """Call hook(module, a_row, a_col) after every forward with that forward's attention
        (as criss_cross_attention returns it); returns a handle whose remove() unregisters it."""
        handle = RemovableHandle(self._attention_hooks)
        self._attention_hooks[handle.id] = hook
        return handle

    def forward(self, x):
        out, attention = criss_cross_attention(self.query_conv(x), self.key_conv(x), self.value_conv(x),
                                               return_attention=True)
        for hook in self._attention_hooks.values():
            hook(self, *attention)
        return self.gamma * out + x

