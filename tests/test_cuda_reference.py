"""The CUDA reference op (references/cuda/): its source compiles, and its element functions, run
through the host loops on the CPU (and through the kernels where CUDA is present), match the
definition of the official CCNet's op and CC.criss_cross_attention within float32 rounding."""
import contextlib
import ctypes
import types

import pytest
import torch

from CC import criss_cross_attention
from references.cuda import CAMap, CAWeight, build, criss_cross, criss_cross_cuda, cuda_reference_status
from utils.errors import UserError

NVCC = build.find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found")
CUDA_AVAILABLE, CUDA_REASON = cuda_reference_status()
SHAPES = [(2, 3, 4, 5), (1, 2, 1, 4), (2, 3, 4, 1), (1, 2, 1, 1), (1, 4, 6, 6)]  # (N, C, H, W)


def cross_index(H, W):
    """(ys, xs), each (H + W - 1, H, W): the position of entry z of the criss-cross of (y, x)."""
    ys = torch.empty(H + W - 1, H, W, dtype=torch.long)
    xs = torch.empty_like(ys)
    for y in range(H):
        for x in range(W):
            column = [h for h in range(H) if h != y]
            positions = [(y, w) for w in range(W)] + [(h, x) for h in column]
            for z, (py, px) in enumerate(positions):
                ys[z, y, x], xs[z, y, x] = py, px
    return ys, xs


def reference_weight(t, f):
    """ca_weight by definition: weight[n, z, y, x] = sum_c t[n, c, y, x] * f[n, c, entry z of (y, x)]."""
    ys, xs = cross_index(*t.shape[2:])
    return (t.unsqueeze(2) * f[:, :, ys, xs]).sum(1)


def reference_map(weight, g):
    """ca_map by definition: out[n, c, y, x] = sum_z weight[n, z, y, x] * g[n, c, entry z of (y, x)]."""
    ys, xs = cross_index(*g.shape[2:])
    return (weight.unsqueeze(1) * g[:, :, ys, xs]).sum(2)


def random(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def assert_float32_close(actual, expected):
    """actual (float32) equals the float64 expected within torch's default float32 tolerances."""
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual, expected.to(torch.float32))


def check_op_against_reference(op, reference, inputs, grad_out):
    """op on float32 copies of inputs gives reference's float64 value and input gradients."""
    exact = [x.clone().requires_grad_() for x in inputs]
    single = [x.float().requires_grad_() for x in inputs]
    expected, actual = reference(*exact), op(*single)
    assert_float32_close(actual, expected)
    expected_grads = torch.autograd.grad(expected, exact, grad_out)
    actual_grads = torch.autograd.grad(actual, single, grad_out.float())
    for a, e in zip(actual_grads, expected_grads):
        assert_float32_close(a, e)


@needs_nvcc
def test_source_compiles_with_nvcc_into_a_loadable_library(tmp_path):
    path = build.compile_library(build.SOURCE, tmp_path, build.target_arch(), NVCC)
    library = ctypes.CDLL(str(path))
    for op in ["cc_weight", "cc_map"]:
        assert hasattr(library, f"{op}_forward") and hasattr(library, f"{op}_backward")
    assert hasattr(library, "cc_runtime_check") and hasattr(library, "cc_error_string")


@needs_nvcc
def test_build_failure_is_one_line_naming_the_first_error(tmp_path):
    source = tmp_path / "broken.cu"
    source.write_text("__global__ void broken( {\n")
    with pytest.raises(UserError) as failure:
        build.compile_library(source, tmp_path, build.DEFAULT_ARCH, NVCC)
    message = str(failure.value)
    assert message.startswith("build failed: ") and "error" in message and "\n" not in message


def test_status_says_why_it_is_unavailable(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cuda_reference_status() == (False, "CUDA is not available")
    monkeypatch.setattr(build, "find_nvcc", lambda: None)
    build._build_and_load.cache_clear()
    try:
        with pytest.raises(UserError, match="nvcc not found"):
            build.load_library()
    finally:
        build._build_and_load.cache_clear()


@needs_nvcc
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a usable GPU")
def test_status_reports_a_runtime_that_cannot_reach_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(build, "target_arch", lambda: build.DEFAULT_ARCH)
    available, reason = cuda_reference_status()
    assert not available and reason.startswith("the library's CUDA runtime cannot use the GPU: ")


class RecordingLibrary:
    """Stands in for the built library: every entry records its arguments and succeeds."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, args)) or 0


class FakeCudaTensor:
    """What _launch reads of a tensor on GPU 2: its device and its data pointer."""
    device = torch.device("cuda", 2)

    def data_ptr(self):
        return 4096


def test_kernels_launch_on_their_inputs_gpu_and_its_stream(monkeypatch):
    """The library links its own CUDA runtime, whose current device is not torch's: it must be told."""
    library = RecordingLibrary()
    monkeypatch.setattr(criss_cross, "load_library", lambda: library)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream",
                        lambda device: types.SimpleNamespace(cuda_stream=100 + device.index))
    criss_cross._launch("cc_map_forward", [FakeCudaTensor()] * 3, (1, 2, 3, 4))
    assert library.calls == [("cc_map_forward", (2, 102, 4096, 4096, 4096, 1, 2, 3, 4))]


def test_cpu_tensors_run_the_host_loops(monkeypatch):
    library = RecordingLibrary()
    monkeypatch.setattr(criss_cross, "load_library", lambda: library)
    tensors = [torch.zeros(1) for _ in range(3)]
    criss_cross._launch("cc_weight_forward", tensors, (1, 1, 1, 1))
    assert library.calls == [("cc_weight_forward", (-1, None, *(t.data_ptr() for t in tensors), 1, 1, 1, 1))]


@needs_nvcc
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a usable GPU")
def test_kernel_launch_without_gpu_returns_a_cuda_error_code():
    library = build.load_library()
    t, weight = torch.zeros(1, 2, 3, 4), torch.zeros(1, 6, 3, 4)
    code = library.cc_weight_forward(0, None, t.data_ptr(), t.data_ptr(), weight.data_ptr(), 1, 2, 3, 4)
    assert code != 0 and library.cc_error_string(code)
    assert weight.eq(0).all()


@needs_nvcc
@pytest.mark.parametrize("N,C,H,W", SHAPES)
def test_host_ca_weight_and_its_backward_match_definition(N, C, H, W):
    inputs = [random(N, C, H, W, seed=1), random(N, C, H, W, seed=2)]
    check_op_against_reference(CAWeight.apply, reference_weight, inputs, random(N, H + W - 1, H, W, seed=3))


@needs_nvcc
@pytest.mark.parametrize("N,C,H,W", SHAPES)
def test_host_ca_map_and_its_backward_match_definition(N, C, H, W):
    inputs = [random(N, H + W - 1, H, W, seed=4), random(N, C, H, W, seed=5)]
    check_op_against_reference(CAMap.apply, reference_map, inputs, random(N, C, H, W, seed=6))


@needs_nvcc
@pytest.mark.parametrize("N,C,H,W", SHAPES)
def test_host_criss_cross_matches_cc_output_and_gradients(N, C, H, W):
    inputs = [random(N, 3, H, W, seed=7), random(N, 3, H, W, seed=8), random(N, C, H, W, seed=9)]
    check_op_against_reference(criss_cross_cuda, criss_cross_attention, inputs, random(N, C, H, W, seed=10))


@needs_nvcc
def test_result_is_in_the_inputs_common_dtype():
    query, key = random(1, 2, 3, 4, seed=11), random(1, 2, 3, 4, seed=12)
    value = random(1, 5, 3, 4, seed=13).float()
    out = criss_cross_cuda(query, key, value)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, criss_cross_attention(query, key, value), rtol=1e-5, atol=1e-6)


def test_mismatched_shapes_raise_value_error():
    with pytest.raises(ValueError, match="criss-cross attention expects"):
        criss_cross_cuda(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 5), torch.zeros(1, 6, 3, 4))


@pytest.mark.skipif(not CUDA_AVAILABLE, reason=f"CUDA reference unavailable: {CUDA_REASON}")
@pytest.mark.parametrize("N,C,H,W", SHAPES + [(2, 8, 33, 17)])
def test_cuda_kernels_match_cc_output_and_gradients(N, C, H, W):
    device = torch.device("cuda")
    inputs = [random(N, 3, H, W, seed=14), random(N, 3, H, W, seed=15), random(N, C, H, W, seed=16)]
    inputs = [x.to(device) for x in inputs]
    check_op_against_reference(criss_cross_cuda, criss_cross_attention, inputs, random(N, C, H, W, seed=17).to(device))


@pytest.mark.skipif(not CUDA_AVAILABLE or torch.cuda.device_count() < 2, reason="needs the CUDA reference and two GPUs")
def test_cuda_kernels_run_on_their_inputs_gpu_while_another_is_current():
    device = torch.device("cuda", torch.cuda.device_count() - 1)
    inputs = [random(2, 3, 5, 6, seed=18), random(2, 3, 5, 6, seed=19), random(2, 4, 5, 6, seed=20)]
    with torch.cuda.device(0):
        check_op_against_reference(criss_cross_cuda, criss_cross_attention, [x.to(device) for x in inputs],
                                   random(2, 4, 5, 6, seed=21).to(device))
        assert torch.cuda.current_device() == 0
