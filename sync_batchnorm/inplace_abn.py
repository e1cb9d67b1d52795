"""In-place activated BatchNorm (InPlace-ABN) in pure PyTorch.

Rota Bulò et al., "In-Place Activated BatchNorm for Memory-Optimized Training of DNNs" (CVPR 2018):
y = act(x̂ · (|γ| + ε) + β) with x̂ = (x - mean) / sqrt(var + ε). In training the output overwrites
the input and the backward keeps only y and per-channel statistics: it recovers x̂ from y by
inverting the activation (hence |γ| + ε, never zero, and invertible activations only), so BatchNorm
with its activation keeps one activation-sized tensor instead of two. The weight gradient takes
d|γ|/dγ = +1 at γ = 0, so zero-initialised weights still train. Recovering x̂ divides by |γ| + ε:
in float32 its error grows like |β| / (|γ| + ε) ulps, which is the method's own precision limit.

The three steps are separate functions so that a recomputing caller can reuse them:
batch statistics (sync_batchnorm.statistics.local_stats and the layer's _global_stats),
normalize_activate_ (the in-place forward) and abn_backward (the gradients from y).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from sync_batchnorm.recompute import computed_once
from sync_batchnorm.statistics import LocalStatistics, SynchronizedStatistics, local_stats

__all__ = ["InPlaceABN", "InPlaceABNSync", "ACTIVATIONS"]

ACTIVATIONS = ("leaky_relu", "elu", "identity")


def _channel_view(t, dim):
    """(C,) -> (1, C, 1, ...) broadcastable against an input of ``dim`` dimensions."""
    return t.view((1, -1) + (1,) * (dim - 2))


def activate_(y, activation, param):
    """Apply the activation to y in place and return y."""
    if activation == "leaky_relu":
        return F.leaky_relu_(y, param)
    if activation == "elu":
        return F.elu_(y, param)
    return y


def invert_activation(y, activation, param):
    """The activation's input z (N, C, ...) from its output y; y itself for the identity."""
    if activation == "leaky_relu":
        return F.leaky_relu(y, 1 / param)
    if activation == "elu":
        # y = param · (exp(z) - 1) for z < 0, so z = log1p(y / param).
        return torch.where(y < 0, torch.log1p(y / param), y)
    return y


def activation_gradient(y, dy, activation, param):
    """dz = dy · act'(z) (N, C, ...) from the output y; dy itself for the identity."""
    if activation == "leaky_relu":
        return torch.ops.aten.leaky_relu_backward(dy, y, param, True)
    if activation == "elu":
        return torch.ops.aten.elu_backward(dy, param, 1, 1, True, y)
    return dy


def _positive_scale(weight, eps):
    """|γ| + ε (C,), the scale InPlace-ABN applies to x̂."""
    return weight.abs() + eps


def normalize_activate_(x, mean, var, weight, bias, eps, activation, param):
    """x (N, C, ...) <- act((x - mean) / sqrt(var + eps) · (|weight| + eps) + bias), in place; returns x.

    mean, var: (C,) in float32 (float64 for double inputs); a float16/bfloat16 x is computed in
    float32 and written back.
    """
    work = x if x.dtype == mean.dtype else x.to(mean.dtype)
    scale = _positive_scale(weight, eps).to(mean.dtype) * torch.rsqrt(var + eps)  # (C,)
    work.sub_(_channel_view(mean, x.dim())).mul_(_channel_view(scale, x.dim()))
    work.add_(_channel_view(bias.to(mean.dtype), x.dim()))
    activate_(work, activation, param)
    if work is not x:
        x.copy_(work)
    return x


def abn_backward(y, dy, var, total, weight, bias, eps, activation, param, sum_over_replicas):
    """Gradients (dx, dweight, dbias) of normalize_activate_ from its output y (N, C, ...) alone.

    var: (C,) biased batch variance; total: the number of values per channel over the whole batch;
    sum_over_replicas: sums a (2C,) tensor over the replicas/processes that share the statistics.
    dweight and dbias are this part's own, to be summed by DataParallel / DDP. With z the
    activation's input and x̂ = (z - bias) / (|weight| + eps), dx is the BatchNorm gradient
    (|weight| + eps) / sqrt(var + eps) · (dz - mean(dz) - x̂ · mean(dz · x̂)), written as
    c1 · dz + c2 · z + c3 per channel so that x̂ is never stored.
    """
    dim, dims, input_dtype = y.dim(), [0] + list(range(2, y.dim())), y.dtype
    y, dy = y.to(var.dtype), dy.to(var.dtype)  # (N, C, ...) each
    positive = _positive_scale(weight, eps).to(var.dtype)  # (C,)
    shift = bias.to(var.dtype)
    dz = activation_gradient(y, dy, activation, param)  # (N, C, ...), dy itself for the identity
    sum_dz = dz.sum(dims)  # (C,)
    if activation == "elu":
        z = invert_activation(y, activation, param)  # (N, C, ...)
        sum_dz_z = (dz * z).sum(dims)  # (C,)
    else:
        # The leaky ReLU scales z and dz inversely, so dz · z = dy · y. One buffer takes these
        # products, then z (leaky ReLU) or dx (identity): no more than BatchNorm's own backward keeps.
        buffer = torch.mul(dy, y)  # (N, C, ...)
        sum_dz_z = buffer.sum(dims)
        z = F.leaky_relu_(buffer.copy_(y), 1 / param) if activation == "leaky_relu" else y
    sum_dz_xhat = (sum_dz_z - shift * sum_dz) / positive  # (C,)
    channels = sum_dz.numel()
    whole = sum_over_replicas(torch.cat([sum_dz, sum_dz_xhat]))  # (2C,)
    mean_dz, mean_dz_xhat = whole[:channels] / total, whole[channels:] / total  # (C,), (C,)
    invstd = torch.rsqrt(var + eps)
    c1 = positive * invstd  # (C,)
    c2 = -invstd * mean_dz_xhat
    c3 = -c1 * mean_dz - c2 * shift
    if activation == "identity":
        dx = torch.mul(dy, _channel_view(c1, dim), out=buffer)
    else:
        dx = dz.mul_(_channel_view(c1, dim))
    dx.addcmul_(z, _channel_view(c2, dim)).add_(_channel_view(c3, dim))
    sign = torch.where(weight >= 0, 1.0, -1.0).to(var.dtype)  # d|γ|/dγ, +1 at γ = 0
    return dx.to(input_dtype), (sum_dz_xhat * sign).to(weight.dtype), sum_dz.to(bias.dtype)


class _InPlaceABNFunction(torch.autograd.Function):
    """Training-mode InPlace-ABN: writes the output into x and keeps only it and the statistics."""

    @staticmethod
    def forward(ctx, x, mean, var, total, weight, bias, eps, activation, param, sum_over_replicas):
        normalize_activate_(x, mean, var, weight, bias, eps, activation, param)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x, var, total, weight, bias)
        ctx.config = (eps, activation, param, sum_over_replicas)
        return x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        y, var, total, weight, bias = ctx.saved_tensors
        dx, dweight, dbias = abn_backward(y, dy, var, total, weight, bias, *ctx.config)
        return dx, None, None, None, dweight, dbias, None, None, None, None


class InPlaceABN(LocalStatistics, nn.modules.batchnorm._NormBase):
    """BatchNorm and activation in one in-place layer: (N, C, ...) -> (N, C, ...).

    activation: "leaky_relu" (slope activation_param), "elu" (alpha activation_param) or "identity".
    Training writes the output into the input tensor, so the input must not be needed by anything
    else; running statistics as nn.BatchNorm keeps them. Eval mode is the plain per-channel affine
    map of the running statistics followed by the activation, out of place.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, activation="leaky_relu", activation_param=0.01):
        super().__init__(num_features, eps, momentum, affine=True, track_running_stats=True)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; InPlace-ABN supports {', '.join(ACTIVATIONS)}")
        if activation != "identity" and activation_param <= 0:
            raise ValueError(f"{activation} is invertible only with a positive parameter, got {activation_param}")
        self.activation = activation
        self.activation_param = activation_param

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected an input of shape (N, C, ...), got {tuple(x.shape)}")

    def forward(self, x):
        self._check_input_dim(x)
        if not self.training:
            work = x.to(torch.promote_types(x.dtype, torch.float32), copy=True)
            normalize_activate_(work, self.running_mean.to(work.dtype), self.running_var.to(work.dtype),
                                self.weight, self.bias, self.eps, self.activation, self.activation_param)
            return work.to(x.dtype)
        with torch.no_grad():
            stats = local_stats(x)
            # In a checkpointed segment's recomputation: the forward's statistics, not exchanged again.
            mean, var, total = computed_once(lambda: self._exchange_and_track(*stats))
        return _InPlaceABNFunction.apply(x, mean, var, total, self.weight, self.bias, self.eps, self.activation,
                                         self.activation_param, self._sum_over_replicas)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, activation={self.activation}, " \
               f"activation_param={self.activation_param}"


class InPlaceABNSync(SynchronizedStatistics, InPlaceABN):
    """InPlaceABN whose statistics, and their gradients, cover the whole batch over the replicas of a
    DataParallelWithCallback and the processes of torch.distributed.

    The backward sums its per-channel gradient sums over the parts as well: between processes by
    all_reduce, between DataParallel replicas through their exchange, which the autograd engine's
    one thread per device lets every replica reach.
    """
