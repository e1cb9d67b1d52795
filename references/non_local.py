"""The non-local block, the full-image attention CCNet's efficiency claims are measured against.

From Wang et al., "Non-local Neural Networks" (CVPR 2018), in its embedded Gaussian form: every
position attends to all N = H * W positions with one softmax over the dot products of two 1x1
embeddings, theta(x_i) . phi(x_j), aggregates a third, g(x_j), and a 1x1 projection W_z brings the
result back to the input's channels, added to it (the residual). The embeddings have half the
input's channels, as in the paper; no subsampling of phi and g, as in the CCNet authors' comparison
(speedinghzl/CCNet issue 2).
"""
import torch
import torch.nn as nn


class NonLocalBlock(nn.Module):
    """z = W_z(y) + x, y_i = sum_j softmax_j(theta(x_i) . phi(x_j)) g(x_j): (B, C, H, W) -> (B, C, H, W).

    The embeddings theta, phi, g have ``inter_channels`` (default C // 2) channels. W_z starts at
    zero, as the paper suggests for inserting the block into a trained network, so that the block
    starts as the identity.
    """

    def __init__(self, in_channels, inter_channels=None):
        super().__init__()
        inter_channels = inter_channels or in_channels // 2
        self.theta = nn.Conv2d(in_channels, inter_channels, kernel_size=1)
        self.phi = nn.Conv2d(in_channels, inter_channels, kernel_size=1)
        self.g = nn.Conv2d(in_channels, inter_channels, kernel_size=1)
        self.out = nn.Conv2d(inter_channels, in_channels, kernel_size=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        B, _, H, W = x.shape
        theta = self.theta(x).flatten(2)  # (B, Ci, N)
        phi = self.phi(x).flatten(2)  # (B, Ci, N)
        g = self.g(x).flatten(2)  # (B, Ci, N)
        attention = torch.softmax(theta.mT @ phi, dim=-1)  # (B, N, N): row i is f(x_i, .) / C(x)
        y = (g @ attention.mT).unflatten(2, (H, W))  # (B, Ci, H, W)
        return self.out(y) + x
