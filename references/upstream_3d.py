"""Upstream's three 3D criss-cross attention formulations (Serge-weihao/CCNet-Pure-Pytorch,
networks/CC3d.py: CrissCrossAttention3D, CrissCrossAttention3D1, CrissCrossAttention3D2), rewritten
from their published semantics as functions of (query, key, value).

Each makes contiguous permuted copies of q, k and v per axis, one bmm per axis line for the
energies, concatenates the three energies (axis 0, 1, 2 in that order) for one softmax, and one
bmm per axis line for the output, differentiated by autograd through every intermediate. The voxel
itself is masked with -inf on two of its three lines; the three formulations differ in which line
keeps it and in the layout of the joint softmax, and compute the same function. The -inf diagonal
is broadcast here where upstream repeats it per line (which only costs upstream more memory).
"""
import torch


def _upstream_3d(query, key, value, keep, joint):
    """query, key (B, Cq, D1, D2, D3), value (B, C, D1, D2, D3) -> (B, C, D1, D2, D3).

    keep: the spatial axis (0, 1, 2) whose line keeps the voxel itself; joint: the order of the
    spatial axes in the (B, ., ., ., D1 + D2 + D3) tensor the softmax runs on.
    """
    B, Cq, C, sizes = query.shape[0], query.shape[1], value.shape[1], query.shape[2:]
    layouts, energies = [], []
    for axis in range(3):
        p, q = (d for d in range(3) if d != axis)
        lines = (0, 2 + p, 2 + q, 1, 2 + axis)  # (B, C, D1, D2, D3) -> (B, P, Q, C, D_axis)
        to_joint = (0, *(1 + (p, q, axis).index(d) for d in joint), 4)
        layouts.append((lines, to_joint, (B, sizes[p], sizes[q])))
        q_lines = query.permute(lines).contiguous().view(-1, Cq, sizes[axis])  # (BPQ, Cq, D_axis)
        k_lines = key.permute(lines).contiguous().view(-1, Cq, sizes[axis])    # (BPQ, Cq, D_axis)
        energy = torch.bmm(q_lines.transpose(1, 2), k_lines)                   # (BPQ, D_axis, D_axis)
        if axis != keep:
            energy = energy + torch.diag(torch.full((sizes[axis],), float("-inf"), device=query.device,
                                                    dtype=energy.dtype)).unsqueeze(0)
        energies.append(energy.view(*layouts[-1][2], sizes[axis], sizes[axis]).permute(to_joint))
    attn = torch.softmax(torch.cat(energies, dim=-1), dim=-1)  # (B, ., ., ., D1 + D2 + D3)
    out, start = 0, 0
    for axis, (lines, to_joint, batch) in enumerate(layouts):
        size = sizes[axis]
        part = attn[..., start:start + size].permute(tuple(sorted(range(5), key=to_joint.__getitem__)))
        part = part.contiguous().view(-1, size, size)                       # (BPQ, D_axis, D_axis)
        v_lines = value.permute(lines).contiguous().view(-1, C, size)       # (BPQ, C, D_axis)
        product = torch.bmm(v_lines, part.transpose(1, 2)).view(*batch, C, size)  # (B, P, Q, C, D_axis)
        out = out + product.permute(tuple(sorted(range(5), key=lines.__getitem__)))
        start += size
    return out


def upstream_criss_cross_3d(query, key, value):
    """CrissCrossAttention3D: the D2 line keeps the voxel; softmax in (B, D2, D1, D3, .) layout."""
    return _upstream_3d(query, key, value, keep=1, joint=(1, 0, 2))


def upstream_criss_cross_3d1(query, key, value):
    """CrissCrossAttention3D1: the D3 line keeps the voxel; softmax in (B, D1, D2, D3, .) layout."""
    return _upstream_3d(query, key, value, keep=2, joint=(0, 1, 2))


def upstream_criss_cross_3d2(query, key, value):
    """CrissCrossAttention3D2: the D1 line keeps the voxel; softmax in (B, D1, D2, D3, .) layout."""
    return _upstream_3d(query, key, value, keep=0, joint=(0, 1, 2))
