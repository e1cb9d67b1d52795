"""Criss-cross attention (CC.py) against a loop over positions, in every dtype and layout."""
import pytest
import torch

from bench.common import peak_mb
from CC import CrissCrossAttention, criss_cross_attention


def loop_reference(query, key, value):
    """The definition, one position at a time: softmax over row i and column j, (i, j) counted once."""
    B, _, H, W = query.shape
    out = torch.zeros_like(value)
    for i in range(H):
        for j in range(W):
            positions = [(i, w) for w in range(W)] + [(h, j) for h in range(H) if h != i]
            energy = torch.stack([(query[:, :, i, j] * key[:, :, a, b]).sum(1) for a, b in positions], 1)
            attn = energy.softmax(1)  # (B, H + W - 1)
            for n, (a, b) in enumerate(positions):
                out[:, :, i, j] += attn[:, n:n + 1] * value[:, :, a, b]
    return out


def random_inputs(B, Cq, C, H, W, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, c, H, W, generator=g, dtype=dtype).requires_grad_() for c in (Cq, Cq, C)]


def grads(fn, inputs, grad_out):
    return torch.autograd.grad(fn(*inputs), inputs, grad_out)


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("B,H,W", [(2, 5, 7), (1, 6, 6), (3, 1, 4), (2, 4, 1), (1, 1, 1)])
def test_output_and_gradients_match_loop_over_positions(B, H, W):
    inputs = random_inputs(B, 3, 4, H, W)
    ref = loop_reference(*inputs)
    out = criss_cross_attention(*inputs)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(ref)
    for ours, theirs in zip(grads(criss_cross_attention, inputs, grad_out), grads(loop_reference, inputs, grad_out)):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_gradcheck_float64():
    assert torch.autograd.gradcheck(criss_cross_attention, random_inputs(2, 3, 5, 4, 6))


def test_constant_inputs_give_exactly_three_and_unit_value_gradient():
    query = torch.ones(1, 8, 10, 10)
    key = torch.full((1, 8, 10, 10), 2.0)
    value = torch.full((1, 64, 10, 10), 3.0, requires_grad=True)
    out = criss_cross_attention(query, key, value)
    out.sum().backward()
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.full_like(out, 3.0))
    assert torch.equal(value.grad, torch.ones_like(value))


def test_float32_within_1e6_of_float64_truth():
    inputs64 = random_inputs(2, 8, 32, 13, 17, seed=1)
    inputs32 = [x.detach().float().requires_grad_() for x in inputs64]
    grad_out = torch.randn(2, 32, 13, 17, dtype=torch.float64)
    out64, out32 = criss_cross_attention(*inputs64), criss_cross_attention(*inputs32)
    assert rel_err(out32, out64) < 1e-6
    for g32, g64 in zip(grads(criss_cross_attention, inputs32, grad_out.float()),
                        grads(criss_cross_attention, inputs64, grad_out)):
        assert rel_err(g32, g64) < 1e-6


# Reduced precision is held to the op's intended precision: the same computation done in float32
# from the half-rounded inputs, its result rounded once to the half dtype. The tolerances are
# multiples of the dtype's unit roundoff u (2^-11 for float16, 2^-8 for bfloat16), relative in
# norm: the output and the value gradient pass about four roundings in the half dtype (energies,
# attention weights, the row and column products, their sum), so 4u; the query and key gradients
# pass the softmax backward and two more products, scaled by the energies, so 10u. Measured over
# 20 seeds: at most 2.5u for the output and value gradient, 6.4u for the query and key gradients
# (also when the energies and softmax are computed in float32, which only removes roundings).
UNIT_ROUNDOFF = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}
OUTPUT_ROUNDINGS, QUERY_KEY_ROUNDINGS = 4, 10


def float32_reference(inputs, grad_out):
    """Output and (query, key, value) gradients computed in float32 from half inputs, rounded once."""
    inputs32 = [x.detach().float().requires_grad_() for x in inputs]
    out = criss_cross_attention(*inputs32)
    dtype = inputs[0].dtype
    return [out.to(dtype)] + [g.to(dtype) for g in grads(criss_cross_attention, inputs32, grad_out.float())]


def assert_within_roundings(results, reference, dtype):
    """results and reference: [output, grad query, grad key, grad value] in dtype, compared as above."""
    u = UNIT_ROUNDOFF[dtype]
    for name, ours, theirs, roundings in zip(("output", "grad query", "grad key", "grad value"), results, reference,
                                             (OUTPUT_ROUNDINGS, QUERY_KEY_ROUNDINGS, QUERY_KEY_ROUNDINGS,
                                              OUTPUT_ROUNDINGS)):
        assert ours.dtype == dtype and torch.isfinite(ours).all(), name
        assert rel_err(ours, theirs) < roundings * u, f"{name}: {rel_err(ours, theirs) / u:.2f}u"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_float32_from_rounded_inputs_rounded_once(dtype):
    inputs64 = random_inputs(2, 8, 16, 9, 11, seed=2)
    # Large energies: the masked diagonal must not turn into NaN in reduced precision.
    inputs64[0] = (inputs64[0] * 4).detach().requires_grad_()
    inputs = [x.detach().to(dtype).requires_grad_() for x in inputs64]
    out = criss_cross_attention(*inputs)
    grad_out = torch.randn_like(out)
    assert_within_roundings([out, *grads(criss_cross_attention, inputs, grad_out)],
                            float32_reference(inputs, grad_out), dtype)


@torch.no_grad()
@pytest.mark.parametrize("B,H,W,channels_last", [(2, 5, 7, False), (3, 1, 4, True), (2, 9, 1, False),
                                                 (1, 17, 3, True)])
def test_no_grad_path_matches_loop_over_positions(B, H, W, channels_last):
    """Without gradients the op writes its output slice by slice (up to 1/8 of the rows or channels)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    q, k, v = (x.detach().contiguous(memory_format=layout) for x in random_inputs(B, 3, 20, H, W, seed=5))
    out = criss_cross_attention(q, k, v)
    assert out.is_contiguous(memory_format=layout)
    torch.testing.assert_close(out, loop_reference(q, k, v), rtol=1e-12, atol=1e-12)


def test_no_grad_peak_memory_is_inputs_output_and_one_and_a_half_attentions():
    """At (1, 512, 128, 256), Cq = 64, with the bench's probe (which counts the inputs once they are
    read through views): at most q + k + v + out + 1.5x the (B, H, W, H + W) float32 attention."""
    g = torch.Generator().manual_seed(0)
    B, C, H, W = 1, 512, 128, 256
    q, k = torch.randn(B, 64, H, W, generator=g), torch.randn(B, 64, H, W, generator=g)
    v = torch.randn(B, C, H, W, generator=g)
    attention_mb = B * H * W * (H + W) * 4 / 2**20  # 48 MiB
    tensors_mb = (2 * q.numel() + 2 * v.numel()) * 4 / 2**20  # q + k + v + out: 144 MiB
    with torch.no_grad():
        peak = peak_mb(lambda: criss_cross_attention(q, k, v), torch.device("cpu"))
    print(f"peak MiB of the no-grad op at (1, 512, 128, 256): {peak:.1f}")
    assert peak <= tensors_mb + 1.5 * attention_mb


def test_float16_energies_beyond_float16_range_match_float32():
    """q.k near 72,000 (float16 stops at 65504) but spread over a few tens, so that the softmax is
    not one-hot: output and gradients as computed in float32 from the same float16 inputs.

    Tolerances follow float16's unit roundoff eps = 2^-11 on each result's scale: the output and
    the value gradient are averages under the attention (scale max|v|, max|dv|); the softmax
    gradient de is rounded to float16 before it multiplies k (or q), so dq and dk may be off by
    eps * max|k| * sum|de|, where sum|de| <= 2 max|dL/da| <= 2 max_ij sum_c |g| * max|v|.
    """
    g = torch.Generator().manual_seed(6)
    q = (30 + 0.05 * torch.randn(2, 80, 6, 7, generator=g)).half()
    k = (30 + 0.05 * torch.randn(2, 80, 6, 7, generator=g)).half()
    v = torch.randn(2, 5, 6, 7, generator=g).half()
    assert torch.einsum("bcij,bciw->bijw", q.float(), k.float()).min() > 65504  # every row energy overflows
    grad_out = torch.randn(2, 5, 6, 7, generator=g)
    inputs16 = [x.clone().requires_grad_() for x in (q, k, v)]
    inputs32 = [x.float().requires_grad_() for x in (q, k, v)]
    out16, out32 = criss_cross_attention(*inputs16), criss_cross_attention(*inputs32)
    assert out16.dtype == torch.float16
    out16.backward(grad_out.half())
    out32.backward(grad_out)
    eps = 2.0 ** -11
    torch.testing.assert_close(out16.float(), out32, rtol=0, atol=4 * eps * v.float().abs().max().item())
    dv16, dv32 = inputs16[2].grad.float(), inputs32[2].grad
    torch.testing.assert_close(dv16, dv32, rtol=0, atol=4 * eps * dv32.abs().max().item())
    da_max = grad_out.abs().sum(1).max().item() * v.float().abs().max().item()
    for half, single, other in ((inputs16[0], inputs32[0], k), (inputs16[1], inputs32[1], q)):
        assert torch.isfinite(half.grad).all()
        bound = 4 * eps * other.float().abs().max().item() * 2 * da_max
        torch.testing.assert_close(half.grad.float(), single.grad, rtol=0, atol=bound)


def test_autocast_computes_in_bfloat16_as_float32_from_rounded_inputs():
    torch.manual_seed(0)
    module = CrissCrossAttention(64)
    torch.nn.init.constant_(module.gamma, 1.0)
    x = torch.randn(2, 64, 9, 12, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, k, v = module.query_conv(x) * 8, module.key_conv(x), module.value_conv(x)  # bfloat16
        inputs = [t.detach().requires_grad_() for t in (q, k, v)]
        inner = criss_cross_attention(*inputs)
        out = module(x)
        projections = [conv(x).float() for conv in (module.query_conv, module.key_conv, module.value_conv)]
    grad_out = torch.randn_like(inner)
    assert_within_roundings([inner, *grads(criss_cross_attention, inputs, grad_out)],
                            float32_reference(inputs, grad_out), torch.bfloat16)
    attention = module.gamma * criss_cross_attention(*projections).bfloat16()  # (2, 64, 9, 12) float32
    assert out.dtype == torch.float32
    assert rel_err(out - x, attention) < OUTPUT_ROUNDINGS * UNIT_ROUNDOFF[torch.bfloat16]
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())


def test_float64_is_left_alone_under_autocast():
    q, k, v = random_inputs(1, 2, 3, 4, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = criss_cross_attention(q, k, v)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, loop_reference(q, k, v), rtol=1e-12, atol=1e-12)


def test_mixed_dtypes_promote():
    q, k, v = random_inputs(1, 2, 3, 4, 5, dtype=torch.float32)
    assert criss_cross_attention(q.double(), k, v).dtype == torch.float64


def test_channels_last_matches_contiguous_and_keeps_format():
    inputs = random_inputs(2, 4, 8, 6, 7, dtype=torch.float32, seed=3)
    cl = [x.detach().to(memory_format=torch.channels_last).requires_grad_() for x in inputs]
    out, out_cl = criss_cross_attention(*inputs), criss_cross_attention(*cl)
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out_cl, out, rtol=1e-6, atol=1e-6)
    grad_out = torch.randn_like(out)
    for a, b in zip(grads(criss_cross_attention, cl, grad_out), grads(criss_cross_attention, inputs, grad_out)):
        assert a.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_mismatched_shapes_are_rejected():
    q, k, v = random_inputs(1, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="criss-cross attention expects"):
        criss_cross_attention(q, k, v[:, :, :3])


def test_module_parameters_match_checkpoint_names_and_start_as_identity():
    module = CrissCrossAttention(64)
    shapes = {name: tuple(p.shape) for name, p in module.named_parameters()}
    assert shapes == {
        "query_conv.weight": (8, 64, 1, 1), "query_conv.bias": (8,),
        "key_conv.weight": (8, 64, 1, 1), "key_conv.bias": (8,),
        "value_conv.weight": (64, 64, 1, 1), "value_conv.bias": (64,),
        "gamma": (1,),
    }
    x = torch.randn(2, 64, 5, 6)
    assert torch.equal(module(x), x)


def test_module_output_is_gamma_times_attention_plus_input():
    module = CrissCrossAttention(16).double()
    torch.nn.init.constant_(module.gamma, 0.5)
    x = torch.randn(2, 16, 4, 5, dtype=torch.float64)
    expected = 0.5 * loop_reference(module.query_conv(x), module.key_conv(x), module.value_conv(x)) + x
    torch.testing.assert_close(module(x), expected, rtol=1e-12, atol=1e-12)


def test_torch_compile_matches_eager():
    torch._dynamo.reset()
    module = CrissCrossAttention(32)
    torch.nn.init.constant_(module.gamma, 1.0)
    compiled = torch.compile(module)
    x = torch.randn(2, 32, 7, 9, requires_grad=True)
    x_eager = x.detach().clone().requires_grad_()
    out, out_eager = compiled(x), module(x_eager)
    torch.testing.assert_close(out, out_eager, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    out_eager.sum().backward()
    torch.testing.assert_close(x.grad, x_eager.grad, rtol=1e-5, atol=1e-5)


def test_torch_compile_of_the_op_without_grad_matches_eager():
    """The chunked no-grad forward, compiled as bench_cca.py's forward row compiles it."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, c, 7, 9, generator=g) for c in (4, 4, 32))
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(criss_cross_attention)(q, k, v), criss_cross_attention(q, k, v),
                                   rtol=1e-5, atol=1e-5)
