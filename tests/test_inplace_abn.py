"""InPlace-ABN against its formula written out in torch ops, and its synchronized version against
one layer over the concatenated batch (threads as DataParallel replicas, gloo processes)."""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from abn_formula import abn_formula
from replicas import replicas_of, run_in_gloo_processes, run_in_threads, step_on_share
from sync_batchnorm import DataParallelWithCallback, InPlaceABN, InPlaceABNSync

WEIGHT = (1.2, -0.7, 0.0, 0.4, -1.3)  # negative and zero weights: |γ| + ε differs from γ
BIAS = (0.3, -0.2, 0.0, 0.1, 0.5)  # zero bias where γ = 0: x̂ is then recovered to float32 precision
CHANNELS = len(WEIGHT)
SPLIT = (2, 3, 1)
ACTIVATIONS = [("leaky_relu", 0.01), ("elu", 1.0), ("identity", 0.0)]
EPS = 1e-5


def _layer(activation, param, cls=InPlaceABN, dtype=torch.float32):
    layer = cls(CHANNELS, activation=activation, activation_param=param).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(WEIGHT))
        layer.bias.copy_(torch.tensor(BIAS))
    return layer


def _batch(dtype=torch.float32):
    """x (6, C, 3, 4) with channel means away from zero, and an output gradient."""
    generator = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(sum(SPLIT), CHANNELS, 3, 4, generator=generator, dtype=torch.float64) + 1
    return x.to(dtype), torch.randn(x.shape, generator=generator, dtype=torch.float64).to(dtype)


def _formula_step(x, grad, activation, param):
    """Output, input/weight/bias gradients and running statistics of the formula over x."""
    weight = torch.tensor(WEIGHT, dtype=x.dtype, requires_grad=True)
    bias = torch.tensor(BIAS, dtype=x.dtype, requires_grad=True)
    x = x.clone().requires_grad_()
    out, (mean, var) = abn_formula(x, weight, bias, EPS, activation, param)
    out.backward(grad)
    return {"out": out.detach(), "x": x.grad, "weight": weight.grad, "bias": bias.grad,
            "running_mean": 0.1 * mean, "running_var": 0.9 + 0.1 * var}


def _assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("activation,param", ACTIVATIONS)
def test_training_step_matches_the_formula_and_reuses_the_input(activation, param):
    layer = _layer(activation, param)
    x, grad = _batch()
    leaf = x.clone().requires_grad_()
    inputs = leaf * 1  # a non-leaf, as a convolution's output is
    out = layer(inputs)
    assert out.untyped_storage().data_ptr() == inputs.untyped_storage().data_ptr()
    out.backward(grad)
    expected = _formula_step(x, grad, activation, param)
    _assert_close(out.detach(), expected["out"])
    _assert_close(leaf.grad, expected["x"])
    _assert_close(layer.weight.grad, expected["weight"])
    _assert_close(layer.bias.grad, expected["bias"])
    _assert_close(layer.running_mean, expected["running_mean"])
    _assert_close(layer.running_var, expected["running_var"])
    assert layer.num_batches_tracked.item() == 1


@pytest.mark.parametrize("activation,param", ACTIVATIONS)
def test_gradcheck_in_float64(activation, param):
    layer = _layer(activation, param, dtype=torch.float64)
    x, _ = _batch(torch.float64)
    weight = torch.tensor([1.2, -0.7, 0.3, 0.4, -1.3], dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(BIAS, dtype=torch.float64, requires_grad=True)

    def step(x, weight, bias):
        return functional_call(layer, {"weight": weight, "bias": bias}, (x.clone(),))

    assert torch.autograd.gradcheck(step, (x[:2].requires_grad_(), weight, bias))


@pytest.mark.parametrize("activation,param", ACTIVATIONS)
def test_eval_is_the_affine_map_of_the_running_statistics_then_the_activation(activation, param):
    layer = _layer(activation, param).eval()
    with torch.no_grad():
        layer.running_mean.copy_(torch.linspace(-1, 1, CHANNELS))
        layer.running_var.copy_(torch.linspace(0.5, 2, CHANNELS))
    x, _ = _batch()
    before = x.clone()
    out = layer(x)
    scale = (torch.tensor(WEIGHT).abs() + EPS) / torch.sqrt(layer.running_var + EPS)
    z = (x - layer.running_mean.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1) + torch.tensor(BIAS).view(1, -1, 1, 1)
    expected = {"leaky_relu": lambda: F.leaky_relu(z, param), "elu": lambda: F.elu(z, param),
                "identity": lambda: z}[activation]()
    _assert_close(out, expected)
    assert torch.equal(x, before)


def test_bfloat16_input_keeps_float32_statistics():
    layer = _layer("leaky_relu", 0.01)
    x, _ = _batch(torch.bfloat16)
    out = layer(x.clone())
    assert out.dtype == torch.bfloat16
    expected = _formula_step(x.float(), torch.zeros(x.shape), "leaky_relu", 0.01)
    torch.testing.assert_close(out, expected["out"].to(torch.bfloat16))
    _assert_close(layer.running_mean, expected["running_mean"])
    _assert_close(layer.running_var, expected["running_var"])


def test_activations_that_cannot_be_inverted_are_refused():
    with pytest.raises(ValueError, match="unknown activation"):
        InPlaceABN(3, activation="relu")
    with pytest.raises(ValueError, match="positive parameter"):
        InPlaceABN(3, activation="leaky_relu", activation_param=0.0)


def _whole_batch_step(x, grad, activation="leaky_relu", param=0.01):
    """One InPlaceABN step over the concatenated batch: output, gradients and state."""
    layer = _layer(activation, param)
    leaf = x.clone().requires_grad_()
    out = layer(leaf * 1)
    out.backward(grad)
    return {"out": out.detach(), "x": leaf.grad, "weight": layer.weight.grad, "bias": layer.bias.grad,
            "state": layer.state_dict()}


def _assert_state(actual, expected):
    for key, value in expected.items():
        _assert_close(actual[key], value)


@pytest.mark.parametrize("activation,param", ACTIVATIONS)
def test_thread_replicas_match_one_layer_on_the_whole_batch(activation, param):
    sync = _layer(activation, param, InPlaceABNSync)
    x, grad = _batch()
    leaf = x.clone().requires_grad_()
    chunks = [part * 1 for part in leaf.split(SPLIT)]  # Scatter's copies, each a tensor of its own
    grads = grad.split(SPLIT)
    replicas = replicas_of(sync, len(SPLIT))
    outs = run_in_threads([lambda i=i: replicas[i](chunks[i]) for i in range(len(SPLIT))])
    # The autograd engine runs each device's part of the backward in that device's thread.
    run_in_threads([lambda i=i: outs[i].backward(grads[i]) for i in range(len(SPLIT))])
    expected = _whole_batch_step(x, grad, activation, param)
    _assert_close(torch.cat(outs).detach(), expected["out"])
    _assert_close(leaf.grad, expected["x"])
    _assert_close(sync.weight.grad, expected["weight"])
    _assert_close(sync.bias.grad, expected["bias"])
    _assert_state(sync.state_dict(), expected["state"])


def test_outside_parallel_the_sync_layer_is_the_plain_one():
    x, grad = _batch()
    sync = _layer("leaky_relu", 0.01, InPlaceABNSync)
    leaf = x.clone().requires_grad_()
    out = sync(leaf * 1)
    out.backward(grad)
    expected = _whole_batch_step(x, grad)
    assert torch.equal(out.detach(), expected["out"]) and torch.equal(leaf.grad, expected["x"])
    assert torch.equal(sync.weight.grad, expected["weight"])


def _gloo_part(rank):
    return step_on_share(_layer("leaky_relu", 0.01, InPlaceABNSync), *_batch(), rank, (2, 4))


def test_gloo_processes_match_one_layer_on_the_whole_batch(tmp_path):
    ranks = run_in_gloo_processes(_gloo_part, 2, tmp_path)
    x, grad = _batch()
    expected = _whole_batch_step(x, grad)
    _assert_close(torch.cat([r["out"] for r in ranks]), expected["out"])
    _assert_close(torch.cat([r["grad"] for r in ranks]), expected["x"])
    # DDP sums the parameter gradients of the processes; each holds its own part.
    _assert_close(ranks[0]["weight"] + ranks[1]["weight"], expected["weight"])
    _assert_close(ranks[0]["bias"] + ranks[1]["bias"], expected["bias"])
    for r in ranks:
        _assert_state(r["state"], expected["state"])


def test_bfloat16_gradients_come_back_in_the_input_and_parameter_dtypes():
    layer = _layer("leaky_relu", 0.01)
    x, grad = _batch(torch.bfloat16)
    leaf = x.clone().requires_grad_()
    layer(leaf * 1).backward(grad)
    expected = _formula_step(x.float(), grad.float(), "leaky_relu", 0.01)
    assert leaf.grad.dtype == torch.bfloat16 and layer.weight.grad.dtype == torch.float32
    torch.testing.assert_close(leaf.grad, expected["x"].to(torch.bfloat16), atol=0.05, rtol=0.02)
    torch.testing.assert_close(layer.bias.grad, expected["bias"], atol=0.05, rtol=0.02)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_data_parallel_on_the_gpus_matches_one_layer_on_the_cpu():
    sync = _layer("leaky_relu", 0.01, InPlaceABNSync).to("cuda")
    model = DataParallelWithCallback(sync, device_ids=list(range(torch.cuda.device_count())))
    x, grad = _batch()
    leaf = x.to("cuda").requires_grad_()
    out = model(leaf * 1)
    out.backward(grad.to("cuda"))
    expected = _whole_batch_step(x, grad)
    actual = {"out": out.detach(), "x": leaf.grad, "weight": sync.weight.grad, "bias": sync.bias.grad}
    for key, value in actual.items():
        torch.testing.assert_close(value.cpu(), expected[key], atol=1e-5, rtol=1e-5)
    for key, value in expected["state"].items():
        torch.testing.assert_close(sync.state_dict()[key].cpu(), value, atol=1e-5, rtol=1e-5)
