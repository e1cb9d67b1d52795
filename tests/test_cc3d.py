"""3D criss-cross attention (CC3D.py) and upstream's 3D formulations against a loop over voxels."""
import pytest
import torch

from CC import criss_cross_attention
from CC3D import CrissCrossAttention3d, criss_cross_attention_3d
from references.upstream_3d import upstream_criss_cross_3d, upstream_criss_cross_3d1, upstream_criss_cross_3d2


def loop_reference_3d(query, key, value):
    """The definition, one voxel at a time: softmax over its three axis lines, the voxel counted once."""
    B, _, D1, D2, D3 = query.shape
    out = torch.zeros_like(value)
    for i in range(D1):
        for j in range(D2):
            for l in range(D3):
                voxels = ([(i, j, z) for z in range(D3)] + [(i, y, l) for y in range(D2) if y != j]
                          + [(x, j, l) for x in range(D1) if x != i])
                energy = torch.stack([(query[:, :, i, j, l] * key[:, :, x, y, z]).sum(1) for x, y, z in voxels], 1)
                attn = energy.softmax(1)  # (B, D1 + D2 + D3 - 2)
                for n, (x, y, z) in enumerate(voxels):
                    out[:, :, i, j, l] += attn[:, n:n + 1] * value[:, :, x, y, z]
    return out


def volumes(B, Cq, C, size, dtype=torch.float64, seed=0):
    """Random query, key (B, Cq, *size) and value (B, C, *size) that require grad."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, c, *size, generator=g, dtype=dtype).requires_grad_() for c in (Cq, Cq, C)]


def output_and_grads(fn, inputs, grad_out):
    """[fn(*inputs), d/dquery, d/dkey, d/dvalue] for the upstream gradient grad_out."""
    out = fn(*inputs)
    return [out] + list(torch.autograd.grad(out, inputs, grad_out))


def assert_matches_loop(fn, inputs, **tol):
    grad_out = torch.randn(inputs[2].shape, generator=torch.Generator().manual_seed(9), dtype=inputs[2].dtype)
    for ours, ref in zip(output_and_grads(fn, inputs, grad_out), output_and_grads(loop_reference_3d, inputs, grad_out)):
        torch.testing.assert_close(ours, ref, **tol)


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# Three different sizes, so that a mix-up of two axes (as reported against the official 3D version)
# attends along the wrong lines and fails; the edge sizes go through the 2D op.
@pytest.mark.parametrize("B,size", [(2, (3, 4, 5)), (1, (5, 2, 3)), (1, (1, 3, 4)), (2, (3, 1, 4)), (1, (4, 3, 1)),
                                    (1, (1, 1, 4)), (1, (1, 1, 1))])
def test_output_and_gradients_match_loop_over_voxels(B, size):
    assert_matches_loop(criss_cross_attention_3d, volumes(B, 3, 4, size), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", [upstream_criss_cross_3d, upstream_criss_cross_3d1, upstream_criss_cross_3d2])
def test_upstream_formulations_match_loop_over_voxels(fn):
    assert_matches_loop(fn, volumes(2, 3, 4, (3, 4, 5), seed=1), rtol=1e-12, atol=1e-12)


def test_gradient_of_the_value_alone_matches_loop():
    q, k, v = volumes(1, 2, 3, (3, 4, 2), seed=2)
    q, k = q.detach(), k.detach()
    grad_out = torch.randn_like(v)
    ours = torch.autograd.grad(criss_cross_attention_3d(q, k, v), v, grad_out)[0]
    torch.testing.assert_close(ours, torch.autograd.grad(loop_reference_3d(q, k, v), v, grad_out)[0],
                               rtol=1e-12, atol=1e-12)


def test_gradcheck_float64():
    assert torch.autograd.gradcheck(criss_cross_attention_3d, volumes(1, 1, 2, (2, 3, 4), seed=3))


def test_constant_inputs_give_exactly_three_and_unit_value_gradient():
    # D1 + D2 + D3 - 2 = 32 voxels per softmax: each weight 1/32 and every partial sum of the products
    # is exact in float32, so any deviation from 3 and 1 is an error of the op, not rounding.
    size = (6, 12, 16)
    query, key = torch.ones(1, 8, *size), torch.full((1, 8, *size), 2.0)
    value = torch.full((1, 64, *size), 3.0, requires_grad=True)
    out = criss_cross_attention_3d(query, key, value)
    out.sum().backward()
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.full_like(out, 3.0))
    assert torch.equal(value.grad, torch.ones_like(value))


@pytest.mark.parametrize("dim", [2, 3, 4])
def test_volume_with_an_axis_of_size_one_equals_the_2d_op_on_the_plane(dim):
    size = [5, 6, 7]
    size[dim - 2] = 1
    inputs = volumes(2, 4, 8, size, dtype=torch.float32, seed=4)
    planes = [x.detach().squeeze(dim).requires_grad_() for x in inputs]
    grad_out = torch.randn(2, 8, *size)
    ours = output_and_grads(criss_cross_attention_3d, inputs, grad_out)
    theirs = output_and_grads(criss_cross_attention, planes, grad_out.squeeze(dim))
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b.unsqueeze(dim))


def test_float32_within_1e6_of_float64():
    inputs64 = volumes(2, 8, 16, (6, 7, 9), seed=5)
    inputs32 = [x.detach().float().requires_grad_() for x in inputs64]
    grad_out = torch.randn(2, 16, 6, 7, 9, dtype=torch.float64)
    for a, b in zip(output_and_grads(criss_cross_attention_3d, inputs32, grad_out.float()),
                    output_and_grads(criss_cross_attention_3d, inputs64, grad_out)):
        assert rel_err(a, b) < 1e-6


def half_and_float32(dtype, scale_q=1.0, scale_k=1.0):
    """Outputs and gradients in dtype and in float32 from the same dtype-rounded inputs."""
    inputs = [x.detach().to(dtype) for x in volumes(2, 8, 16, (4, 6, 5), seed=6)]
    inputs[0], inputs[1] = inputs[0] * scale_q, inputs[1] * scale_k
    grad_out = torch.randn(2, 16, 4, 6, 5, generator=torch.Generator().manual_seed(1)).to(dtype)
    half = output_and_grads(criss_cross_attention_3d, [x.requires_grad_() for x in inputs], grad_out)
    full = output_and_grads(criss_cross_attention_3d, [x.float().requires_grad_() for x in inputs], grad_out.float())
    return half, full


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_match_float32_on_the_rounded_inputs(dtype):
    half, full = half_and_float32(dtype)
    # Rounding the float32 results to the dtype alone is a relative error of up to eps / 2 per element;
    # rounding the attention and dL/da on the way adds about as much again (measured: 0.4 eps in norm).
    eps = torch.finfo(dtype).eps
    for a, b in zip(half, full):
        assert a.dtype == dtype
        assert rel_err(a, b) < eps


def test_float16_energies_beyond_65504_do_not_overflow():
    # Energies of about 8 * 40 * 250 = 80000 overflow float16; they are computed in float32.
    half, full = half_and_float32(torch.float16, scale_q=40.0, scale_k=250.0)
    assert all(torch.isfinite(a).all() for a in half)
    assert rel_err(half[0], full[0]) < 4 * torch.finfo(torch.float16).eps


def test_autocast_computes_in_the_autocast_dtype_and_leaves_float64_alone():
    q, k, v = volumes(1, 2, 3, (3, 4, 2), seed=7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert criss_cross_attention_3d(q.float(), k.float(), v.float()).dtype == torch.bfloat16
        out64 = criss_cross_attention_3d(q, k, v)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64, loop_reference_3d(q, k, v), rtol=1e-12, atol=1e-12)


def test_channels_last_3d_matches_loop_and_keeps_the_format():
    inputs = [x.detach().to(memory_format=torch.channels_last_3d).requires_grad_()
              for x in volumes(2, 3, 4, (3, 4, 5), seed=8)]
    results = output_and_grads(criss_cross_attention_3d, inputs, torch.randn(2, 4, 3, 4, 5, dtype=torch.float64))
    assert all(r.is_contiguous(memory_format=torch.channels_last_3d) for r in results)
    assert_matches_loop(criss_cross_attention_3d, inputs, rtol=1e-12, atol=1e-12)


def test_mismatched_shapes_are_rejected():
    q, k, v = volumes(1, 2, 3, (3, 4, 5))
    with pytest.raises(ValueError, match="3D criss-cross attention expects"):
        criss_cross_attention_3d(q, k, v[..., :4])
    with pytest.raises(ValueError, match="3D criss-cross attention expects"):
        criss_cross_attention_3d(q[..., 0], k[..., 0], v[..., 0])


def test_module_has_upstream_parameter_names_and_starts_as_identity():
    module = CrissCrossAttention3d(16)
    assert {name: tuple(p.shape) for name, p in module.named_parameters()} == {
        "query_conv.weight": (2, 16, 1, 1, 1), "query_conv.bias": (2,),
        "key_conv.weight": (2, 16, 1, 1, 1), "key_conv.bias": (2,),
        "value_conv.weight": (16, 16, 1, 1, 1), "value_conv.bias": (16,),
        "gamma": (1,),
    }
    x = torch.randn(1, 16, 3, 4, 5)
    assert torch.equal(module(x), x)


def test_module_output_is_gamma_times_attention_plus_input():
    module = CrissCrossAttention3d(16).double()
    torch.nn.init.constant_(module.gamma, 0.5)
    x = torch.randn(1, 16, 3, 4, 2, dtype=torch.float64)
    expected = 0.5 * loop_reference_3d(module.query_conv(x), module.key_conv(x), module.value_conv(x)) + x
    torch.testing.assert_close(module(x), expected, rtol=1e-12, atol=1e-12)


def test_torch_compile_matches_eager():
    torch._dynamo.reset()
    inputs = volumes(1, 2, 4, (3, 4, 5), dtype=torch.float32, seed=10)
    grad_out = torch.randn(1, 4, 3, 4, 5)
    compiled = output_and_grads(torch.compile(criss_cross_attention_3d), inputs, grad_out)
    for a, b in zip(compiled, output_and_grads(criss_cross_attention_3d, inputs, grad_out)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
