"""Where a position's criss-cross attention reaches, pass after pass: the maps of CCNet's figure.

One pass of CrissCrossAttention over an (h, w) grid is a sparse (hw x hw) matrix A of softmax
weights: A[p, q] is what position p gives position q of its row or column (each row of A sums to
1). Pass k's output at p is gamma * sum_q A_k[p, q] v(x_k)[q] + x_k[p], so ignoring the value
projection and the residual, the weight of position r of the first pass's input in p's output
after k passes is (A_k ... A_2 A_1)[p, r]. After one pass it covers p's row and column; after two,
every position. The maps are read from the network's own forward pass through the attention hooks.
"""
from contextlib import contextmanager

import torch

from CC import CrissCrossAttention


def attention_modules(network):
    """The CrissCrossAttention modules of network, in registration order."""
    return [module for module in network.modules() if isinstance(module, CrissCrossAttention)]


@contextmanager
def recorded_attention(network):
    """Within the block, every criss-cross pass of ``network`` appends its (a_row, a_col) to the
    yielded list, in the order the passes run (a_row (B, h, w, w), a_col (B, w, h, h) as CC.py gives them)."""
    passes = []
    handles = [module.register_attention_hook(lambda _, a_row, a_col: passes.append((a_row, a_col)))
               for module in attention_modules(network)]
    try:
        yield passes
    finally:
        for handle in handles:
            handle.remove()


def carry(weights, a_row, a_col):
    """weights (B, h, w) over positions q -> (B, h, w) over positions r: sum_q weights[q] A[q, r],
    A being the pass whose attention is (a_row, a_col)."""
    along_rows = torch.einsum("bij,bijw->biw", weights, a_row)  # q = (i, j) to r = (i, w)
    along_cols = torch.einsum("bij,bjih->bhj", weights, a_col)  # q = (i, j) to r = (h, j); a_col is 0 at h = i
    return along_rows + along_cols


def attention_maps(passes, y, x):
    """(len(passes), B, h, w): map k is row p = (y, x) of A_{k+1} ... A_1, the weight each position
    of the first pass's input has in p's output after k + 1 passes (each map sums to 1); float32,
    or float64 for float64 attention."""
    dtype = torch.promote_types(passes[0][0].dtype, torch.float32)
    start = passes[0][0].new_zeros(passes[0][0].shape[:3], dtype=dtype)  # (B, h, w)
    start[:, y, x] = 1
    maps = []
    for k in range(len(passes)):
        weights = start
        for a_row, a_col in reversed(passes[:k + 1]):
            weights = carry(weights, a_row.to(dtype), a_col.to(dtype))
        maps.append(weights)
    return torch.stack(maps)
