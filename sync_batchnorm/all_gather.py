"""A differentiable all_gather over the default torch.distributed process group."""
import torch
import torch.distributed as dist

from utils.runtime import is_distributed


class _AllGather(torch.autograd.Function):
    """(N,) on every rank -> (world_size, N), row r being rank r's tensor."""

    @staticmethod
    def forward(ctx, tensor):
        ctx.rank = dist.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad):
        # Every rank's loss saw every row, so this rank's input gets its row summed over all ranks.
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank]


def all_gather(tensor):
    """Stack ``tensor`` from every process: (N,) -> (world_size, N), gradients summed back."""
    return _AllGather.apply(tensor)


def world_size():
    """The number of processes in the default group, 1 outside torch.distributed."""
    return dist.get_world_size() if is_distributed() else 1
