"""RCCA.RecurrentCrissCrossAttention: CCNet's recurrent head without the classifier, for other networks."""
import functools

import torch
import torch.nn as nn

from CC import criss_cross_attention
from RCCA import RecurrentCrissCrossAttention


def test_recurrence_passes_of_one_shared_attention_between_the_two_convolutions():
    torch.manual_seed(0)
    block = RecurrentCrissCrossAttention(64, recurrence=3).double().eval()
    with torch.no_grad():
        block.cca.gamma.fill_(0.7)
        x = torch.randn(2, 64, 5, 7, dtype=torch.float64)
        out = block.conva(x)
        for _ in range(3):
            cca = block.cca
            out = cca.gamma * criss_cross_attention(cca.query_conv(out), cca.key_conv(out), cca.value_conv(out)) + out
        expected = block.convb(out)
        torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)
    assert block(x).shape == (2, 16, 5, 7)


def test_layers_are_the_ones_passed_in_and_keys_are_ccnets():
    norm = functools.partial(nn.GroupNorm, 4)
    block = RecurrentCrissCrossAttention(32, channels=8, recurrence=2, norm_layer=lambda c: norm(c), act_layer=None)
    assert [type(m) for m in block.conva] == [nn.Conv2d, nn.GroupNorm]
    assert block.convb[0].in_channels == block.convb[0].out_channels == 8
    assert {k.split(".")[0] for k in block.state_dict()} == {"conva", "cca", "convb"}
    assert "cca.query_conv.weight" in block.state_dict() and "conva.1.weight" in block.state_dict()
    default = RecurrentCrissCrossAttention(32)
    assert [type(m) for m in default.conva] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]


def test_recurrence_zero_freezes_the_attention_and_skips_it():
    block = RecurrentCrissCrossAttention(32, recurrence=0).eval()
    assert not any(p.requires_grad for p in block.cca.parameters())
    x = torch.randn(1, 32, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(block(x), block.convb(block.conva(x)))
