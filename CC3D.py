"""Criss-cross attention over volumes and video in pure PyTorch.

The 3D form of CCNet's criss-cross attention (Huang et al., "CCNet: Criss-Cross Attention for
Semantic Segmentation", ICCV 2019 / TPAMI 2020): every voxel (i, j, l) of a (D1, D2, D3) volume
attends to the D1 + D2 + D3 - 2 voxels of its three axis lines, itself counted once, with one
softmax over all of them.

The op is a custom ``autograd.Function`` with a hand-written backward, like the 2D op of CC.py: it
keeps q, k, v and the (B, D1, D2, D3, D1 + D2 + D3) attention, and computes each gradient with one
batched matmul per axis, less time and memory than autograd through the same forward. The energies
of each axis line come from one batched matmul, and one softmax runs over their voxel-major
concatenation. Lines along the last axis are read in place; lines along the first two are
contiguous copies. A volume with an axis of size 1 is a plane, and goes to the 2D op.
"""
import torch
import torch.nn as nn

from CC import compute_dtype, criss_cross_attention, energy_dtype

__all__ = ["criss_cross_attention_3d", "CrissCrossAttention3d"]

# (B, C, D1, D2, D3) -> (B, P, Q, C, D_axis) for the lines along axis 0, 1, 2 of the volume.
_LINES = ((0, 3, 4, 1, 2), (0, 2, 4, 1, 3), (0, 2, 3, 1, 4))
_VOLUME = tuple(tuple(sorted(range(5), key=perm.__getitem__)) for perm in _LINES)


def _lines(x, axis):
    """(B, C, D1, D2, D3) -> (B, P, Q, C, D_axis) view: one (C, D_axis) matrix per line along axis."""
    return x.permute(_LINES[axis])


def _volume(x, axis):
    """The inverse of _lines: (B, P, Q, C, D_axis) -> (B, C, D1, D2, D3) view."""
    return x.permute(_VOLUME[axis])


def _transpose_blocks(x, rows, cols, out):
    """out[b] viewed as (cols, rows) <- the transpose of x[b] viewed as (rows, cols), for every volume b.

    copy_ transposes a 2D block blockwise, several times faster than the equivalent 5D permute.
    """
    for b in range(x.shape[0]):
        out[b].view(cols, rows).copy_(x[b].view(rows, cols).T)
    return out


def _line_layout(x, axis):
    """Contiguous x (B, C, D1, D2, D3) -> its lines along axis as a (B, P, Q, C, D_axis) tensor for
    _line_matmul: a view along the last axis (a bmm reads it in place), a contiguous copy along the others.

    The lines along the first axis are a 2D transpose per volume, (C D1, D2 D3) -> (D2 D3, C D1).
    """
    if axis == 2:
        return _lines(x, 2)
    if axis == 1:
        return _lines(x, 1).contiguous()
    B, C, D1, D2, D3 = x.shape
    return _transpose_blocks(x, C * D1, D2 * D3, x.new_empty(B, D2, D3, C, D1))


def _line_matmul(x, y, axis):
    """x (B, P, Q, M, K) @ y (B, P, Q, K, N) -> (B, P, Q, M, N) contiguous, for lines along axis.

    Along the last axis x is a view of the volume (_line_layout), dense per line but not mergeable
    over B, so one batched matmul would copy it; a bmm per volume reads it in place (y made contiguous:
    bmm with a strided right operand is slow).
    """
    if axis != 2:
        return x @ y
    y = y.contiguous()
    out = x.new_empty(*x.shape[:4], y.shape[4])
    for b in range(x.shape[0]):
        torch.bmm(x[b].flatten(0, 1), y[b].flatten(0, 1), out=out[b].flatten(0, 1))
    return out


def _add_lines_(out, part, axis):
    """Add part (B, P, Q, C, D_axis), lines along axis, to the contiguous volume out (B, C, D1, D2, D3);
    out None: return part as a new contiguous volume. The first axis goes in blockwise, as in _line_layout.
    """
    if out is not None:
        return out.add_(_volume(part, axis))
    if axis != 0:
        return _volume(part, axis).contiguous()
    B, D2, D3, C, D1 = part.shape
    return _transpose_blocks(part, D2 * D3, C * D1, part.new_empty(B, C, D1, D2, D3))


def _in_format(x, like):
    """The contiguous x in like's memory format (channels_last_3d or contiguous)."""
    if not like.is_contiguous() and like.is_contiguous(memory_format=torch.channels_last_3d):
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x


def _joint(parts):
    """parts[axis] (B, P, Q, D_axis, D_axis) [query, key] -> (B, D1, D2, D3, D1 + D2 + D3), voxel-major;
    each voxel's row holds its entries for the keys of its line along axis 0, then 1, then 2."""
    return torch.cat([_volume(p.mT, axis).movedim(1, -1) for axis, p in enumerate(parts)], dim=-1)


def _axis_part(joint, axis, transpose):
    """The axis' block of a voxel-major joint tensor as a contiguous (B, P, Q, D_axis, D_axis) tensor
    indexed [query, key], or [key, query] if transpose."""
    sizes = joint.shape[1:4]
    start = sum(sizes[:axis])
    lines = _lines(joint[..., start:start + sizes[axis]].movedim(-1, 1), axis)  # (B, P, Q, key, query)
    return (lines if transpose else lines.mT).contiguous()


def _joint_softmax(energies):
    """Softmax over each voxel's three lines at once -> (B, D1, D2, D3, D1 + D2 + D3) voxel-major.

    energies[axis]: (B, P, Q, D_axis, D_axis) indexed [query, key] along each line; emptied. The
    voxel's own entry is set to -inf on the first two axes, so it counts once (through the last axis).
    One softmax over the voxel-major concatenation takes fewer passes than per-axis statistics.
    """
    for e in energies[:2]:
        e.diagonal(dim1=-2, dim2=-1).fill_(float("-inf"))
    joint = _joint(energies)
    energies.clear()
    return torch.softmax(joint, dim=-1, out=joint)


class _CrissCross3dFunction(torch.autograd.Function):
    """q, k (B, Cq, D1, D2, D3), v (B, C, D1, D2, D3) -> (B, C, D1, D2, D3), with a hand-written backward.

    Kept for backward: q, k, v, the voxel-major attention (B, D1, D2, D3, D1 + D2 + D3) and, if
    keep_value_lines (the q/k gradients need them), v's lines along the first two axes, which saves
    making them again. Energies and the softmax run in float32 for half types.
    """

    @staticmethod
    def forward(ctx, query, key, value, keep_value_lines):
        stat = energy_dtype(value.dtype)
        q, k = query.to(stat).contiguous(), key.to(stat).contiguous()
        energies = [_line_matmul(_line_layout(q, axis).mT, _line_layout(k, axis), axis) for axis in range(3)]
        del q, k
        attn = _joint_softmax(energies).to(value.dtype)
        value_c, out, kept = value.contiguous(), None, []
        for axis in range(3):
            v_lines = _line_layout(value_c, axis)  # (B, P, Q, C, D_axis)
            out = _add_lines_(out, _line_matmul(v_lines, _axis_part(attn, axis, transpose=True), axis), axis)
            kept += [v_lines] if keep_value_lines else []
        ctx.save_for_backward(query, key, value, attn, *kept)
        return _in_format(out, value)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        query, key, value, attn, *v_lines = ctx.saved_tensors
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        stat = energy_dtype(value.dtype)
        grad_out = grad_out.contiguous()
        grad_q = grad_k = grad_v = None
        grad_attn = []  # dL/da per axis, (B, P, Q, D_axis, D_axis) [query, key]
        for axis in range(3):
            g_lines = _line_layout(grad_out, axis)  # (B, P, Q, C, D_axis)
            if need_v:
                grad_v = _add_lines_(grad_v, _line_matmul(g_lines, _axis_part(attn, axis, transpose=False), axis), axis)
            if need_q or need_k:
                grad_attn.append(_line_matmul(g_lines.mT, v_lines[axis], axis))
            del g_lines
        if need_q or need_k:
            # Softmax backward over each voxel's row: de = a * (dL/da - <a, dL/da>).
            grad_e, attn = _joint(grad_attn).to(stat), attn.to(stat)  # (B, D1, D2, D3, D1 + D2 + D3)
            del grad_attn, v_lines
            dot = attn.unsqueeze(-2) @ grad_e.unsqueeze(-1)  # (B, D1, D2, D3, 1, 1)
            grad_e.sub_(dot.squeeze(-1)).mul_(attn)
            del attn, dot
            q, k = query.to(stat).contiguous(), key.to(stat).contiguous()
            for axis in range(3):
                de = _axis_part(grad_e, axis, transpose=False)  # (B, P, Q, D_axis, D_axis) [query, key]
                if need_q:
                    grad_q = _add_lines_(grad_q, _line_matmul(_line_layout(k, axis), de.mT, axis), axis)
                if need_k:
                    grad_k = _add_lines_(grad_k, _line_matmul(_line_layout(q, axis), de, axis), axis)
            grad_q = _in_format(grad_q, query).to(query.dtype) if need_q else None
            grad_k = _in_format(grad_k, key).to(key.dtype) if need_k else None
        return grad_q, grad_k, _in_format(grad_v, value) if need_v else None, None


def _check_shapes(query, key, value):
    """ValueError unless query, key are (B, Cq, D1, D2, D3) and value (B, C, D1, D2, D3)."""
    if query.dim() != 5 or key.shape != query.shape or value.dim() != 5 \
            or value.shape[0] != query.shape[0] or value.shape[2:] != query.shape[2:]:
        raise ValueError("3D criss-cross attention expects query, key (B, Cq, D1, D2, D3) and value "
                         f"(B, C, D1, D2, D3), got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")


def criss_cross_attention_3d(query, key, value):
    """3D criss-cross attention without projections or residual.

    query, key: (B, Cq, D1, D2, D3); value: (B, C, D1, D2, D3) -> (B, C, D1, D2, D3), where
    out[:, :, i, j, l] = sum over the D1 + D2 + D3 - 2 voxels p on the axis lines through (i, j, l) of
    softmax_p(<query[:, :, i, j, l], key[:, :, p]>) * value[:, :, p].
    The inputs are cast to the dtype the 2D op computes in (CC.compute_dtype: autocast's, float64
    excepted). A volume with an axis of size 1 is computed by the 2D op on the remaining plane.
    """
    _check_shapes(query, key, value)
    for dim in (2, 3, 4):
        if value.shape[dim] == 1:
            return criss_cross_attention(query.squeeze(dim), key.squeeze(dim), value.squeeze(dim)).unsqueeze(dim)
    # compute_dtype reads only the dtypes and the device; it checks 4-D shapes, so it gets one slice.
    dtype = compute_dtype(query[..., 0], key[..., 0], value[..., 0])
    with torch.autocast(value.device.type, enabled=False):
        # The value's line copies are kept for backward only where the q/k gradients will need them.
        keep_value_lines = torch.is_grad_enabled() and (query.requires_grad or key.requires_grad)
        return _CrissCross3dFunction.apply(query.to(dtype), key.to(dtype), value.to(dtype), keep_value_lines)


class CrissCrossAttention3d(nn.Module):
    """Criss-cross attention over volumes: gamma * CCA3d(q(x), k(x), v(x)) + x.

    x: (B, in_dim, D1, D2, D3) -> (B, in_dim, D1, D2, D3). 1x1x1 Conv3d projections named as in the
    2D module and upstream's 3D modules (query_conv, key_conv with in_dim // 8 channels, value_conv);
    gamma starts at zero, so the module starts as the identity.
    """

    def __init__(self, in_dim):
        super().__init__()
        self.query_conv = nn.Conv3d(in_dim, in_dim // 8, kernel_size=1)
        self.key_conv = nn.Conv3d(in_dim, in_dim // 8, kernel_size=1)
        self.value_conv = nn.Conv3d(in_dim, in_dim, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        out = criss_cross_attention_3d(self.query_conv(x), self.key_conv(x), self.value_conv(x))
        return self.gamma * out + x
