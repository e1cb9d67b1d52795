"""Attention maps of CCNet's figure against the dense attention matrices of a small RCCA head."""
import torch
from torch import nn

from networks.attention_maps import attention_maps, attention_modules, recorded_attention
from networks.ccnet import RCCAModule
from networks.norms import make_layout

BATCHNORM_RELU = make_layout("syncbn", nn.BatchNorm2d)  # plain BN + ReLU after each head conv


def dense(a_row, a_col):
    """The (h*w, h*w) matrix A of one image's pass, one entry at a time: A[p, q] is the weight that
    position p = (i, j) gives q on its row (a_row[i, j, w]) or its column (a_col[j, i, h])."""
    _, h, w, _ = a_row.shape
    A = torch.zeros(h * w, h * w, dtype=a_row.dtype)
    for i in range(h):
        for j in range(w):
            for k in range(w):
                A[i * w + j, i * w + k] += a_row[0, i, j, k]
            for k in range(h):
                A[i * w + j, k * w + j] += a_col[0, j, i, k]
    return A


def small_head(recurrence):
    """An RCCA head (32 channels in, 8 attended) in float64 whose attention adds to its input."""
    torch.manual_seed(0)
    head = RCCAModule(32, 3, BATCHNORM_RELU, recurrence).double().eval()
    head.cca.gamma.data.fill_(0.5)
    return head


@torch.no_grad()
def test_recorded_attention_is_the_one_the_pass_applies():
    head = small_head(1)
    features = head.conva(torch.randn(1, 32, 5, 6, dtype=torch.float64))  # (1, 8, 5, 6)
    with recorded_attention(head) as passes:
        out = head.cca(features)
    A = dense(*passes[0])
    values = head.cca.value_conv(features).flatten(2)[0]  # (8, 30)
    expected = 0.5 * values @ A.T + features.flatten(2)[0]
    torch.testing.assert_close(out.flatten(2)[0], expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(A.sum(1), torch.ones(30, dtype=torch.float64), rtol=1e-12, atol=1e-12)


@torch.no_grad()
def test_two_pass_map_is_the_product_of_the_two_passes_at_every_position():
    head = small_head(2)
    with recorded_attention(head) as passes:
        head(torch.randn(1, 32, 5, 6, dtype=torch.float64))
    assert len(passes) == 2
    A1, A2 = dense(*passes[0]), dense(*passes[1])
    assert not torch.allclose(A1, A2)
    for y in range(5):
        for x in range(6):
            maps = attention_maps(passes, y, x)  # (2, 1, 5, 6)
            torch.testing.assert_close(maps[0, 0].flatten(), A1[y * 6 + x], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(maps[1, 0].flatten(), (A2 @ A1)[y * 6 + x], rtol=1e-12, atol=1e-12)
            off_cross = torch.ones(5, 6, dtype=torch.bool)
            off_cross[y, :] = off_cross[:, x] = False
            assert (maps[0, 0][off_cross] == 0).all() and (maps[1, 0] > 0).all()


@torch.no_grad()
def test_every_pass_of_any_recurrence_is_recorded_and_the_hooks_go_away():
    head = small_head(3)
    features = torch.randn(2, 32, 4, 3, dtype=torch.float64)
    with recorded_attention(head) as passes:
        head(features)
    maps = attention_maps(passes, 1, 2)
    assert len(passes) == 3 and maps.shape == (3, 2, 4, 3)
    torch.testing.assert_close(maps.sum((2, 3)), torch.ones(3, 2, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    head(features)
    assert len(passes) == 3


def test_attention_modules_are_found_only_where_there_is_criss_cross_attention():
    head = small_head(1)
    assert attention_modules(head) == [head.cca]
    assert attention_modules(nn.Sequential(head.conva, head.convb)) == []
