"""InPlace-ABN's formula in plain, out-of-place torch ops: the reference the tests compare against."""
import torch
import torch.nn.functional as F


def abn_formula(x, weight, bias, eps, activation, param):
    """act((x - mean) / sqrt(var + eps) · (|γ| + eps) + β) over the batch x (N, C, H, W), with
    d|γ|/dγ = +1 at γ = 0; returns it and the batch's (mean, unbiased var) (C,) for the running statistics."""
    var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    xhat = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + eps)
    magnitude = torch.where(weight >= 0, weight, -weight)
    z = xhat * (magnitude + eps).view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
    count = x.numel() // x.shape[1]
    unbiased = var.detach() * count / (count - 1)
    if activation == "leaky_relu":
        return F.leaky_relu(z, param), (mean.detach(), unbiased)
    if activation == "elu":
        return F.elu(z, param), (mean.detach(), unbiased)
    return z, (mean.detach(), unbiased)
