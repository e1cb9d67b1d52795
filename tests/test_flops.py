"""bench/flops.py: the dispatcher-level FLOP count against the formulas of what the ops compute, the
non-local block against a loop over positions, and the bench's rows and JSON record."""
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import flops
from bench.flops import PAPER_INPUT, Part, attention_parts, flops_and_peak, passes
from CC import CrissCrossAttention
from networks.resnet import ResNet
from references.non_local import NonLocalBlock


def counted(module, x, train=False):
    """FLOPs the bench counts for module(x): a no-grad forward, or with train a forward and backward."""
    forward, backward = passes(Part("part", module, (x,), True))
    return flops_and_peak(backward if train else forward)[0]


def criss_cross_formula(B, C, H, W):
    """FLOPs of one CrissCrossAttention pass as it computes them, Cq = C // 8 (bias terms not counted):
    (forward, backward). Each position's energies and weighted sums run over the H + W entries of
    its row and column products, the column's copy of the position itself masked out."""
    Cq = C // 8
    projections = 2 * B * H * W * C * (2 * Cq + C)  # three 1x1 convolutions
    attention = 2 * B * H * W * (H + W) * (Cq + C)  # energies q.k, then the sums of v
    # backward: each projection's input and weight gradients; the attention's four products
    # (d/da from grad_out and v, d/dv from grad_out and a, d/dq from k, d/dk from q)
    backward = 2 * projections + 2 * B * H * W * (H + W) * (2 * C + 2 * Cq)
    return projections + attention, backward


def non_local_formula(B, C, H, W):
    """FLOPs of a forward of the non-local block, Ci = C // 2, N = H * W (bias terms not counted)."""
    N, Ci = H * W, C // 2
    return 2 * B * N * C * Ci * 3 + 2 * B * N * N * Ci * 2 + 2 * B * N * Ci * C  # theta, phi, g; f, y; W_z


@pytest.mark.parametrize("shape", [(1, 16, 5, 7), (2, 32, 6, 3)])
def test_counter_sees_every_product_of_a_criss_cross_pass_forward_and_backward(shape):
    torch.manual_seed(0)
    module, x = CrissCrossAttention(shape[1]), torch.randn(shape)
    forward, backward = criss_cross_formula(*shape)
    assert counted(module, x) == forward  # the no-grad path (CC._inference)
    assert counted(module, x, train=True) == forward + backward  # the autograd Function and its backward


def test_the_grad_path_forward_counts_what_the_no_grad_path_counts():
    torch.manual_seed(0)
    module, x = CrissCrossAttention(16), torch.randn(1, 16, 5, 7, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        module(x)
    assert counter.get_total_flops() == criss_cross_formula(1, 16, 5, 7)[0]


def test_rcca_rows_count_one_and_two_passes_and_the_non_local_row_its_formula():
    features = torch.randn(1, 16, 5, 7)
    rows = {part.name: counted(part.module, features) for part in attention_parts(features)}
    one_pass = criss_cross_formula(1, 16, 5, 7)[0]
    assert (rows["cca"], rows["rcca-r1"], rows["rcca-r2"]) == (one_pass, one_pass, 2 * one_pass)
    assert rows["non-local"] == non_local_formula(1, 16, 5, 7)


def test_one_pass_at_the_paper_input_is_the_author_formula_less_biases_and_one_position():
    """speedinghzl/CCNet issue 2: 2hw(C+1)C' twice, 2hw(C+1)C, 2hw(h+w+1)C' and 2hw(h+w+1)C. The
    counter leaves out the biases (the +1 of C+1) and the products run over h+w entries, not h+w+1."""
    _, C, h, w = PAPER_INPUT
    Cq = C // 8
    author = 2 * h * w * (C + 1) * Cq * 2 + 2 * h * w * (C + 1) * C + 2 * h * w * (h + w + 1) * (Cq + C)
    biases = 2 * h * w * (2 * Cq + C)
    one_position = 2 * h * w * (Cq + C)
    torch.manual_seed(0)
    assert counted(CrissCrossAttention(C), torch.randn(PAPER_INPUT)) == author - biases - one_position


def test_non_local_block_is_the_embedded_gaussian_attention_position_by_position():
    torch.manual_seed(0)
    block = NonLocalBlock(6).double()
    torch.nn.init.normal_(block.out.weight)  # W_z starts at zero; give it weights to check
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        theta, phi, g = (conv(x).flatten(2) for conv in (block.theta, block.phi, block.g))  # (2, 3, 12) each
        y = torch.zeros_like(g)
        for b in range(2):
            for i in range(12):
                energies = [float(theta[b, :, i] @ phi[b, :, j]) for j in range(12)]
                weights = torch.tensor(energies, dtype=torch.float64).softmax(0)
                y[b, :, i] = sum(weights[j] * g[b, :, j] for j in range(12))
        torch.testing.assert_close(block(x), block.out(y.view(2, 3, 3, 4)) + x, rtol=1e-12, atol=1e-12)


def test_non_local_block_starts_as_the_identity():
    x = torch.randn(1, 8, 4, 5)
    assert torch.equal(NonLocalBlock(8)(x), x)


def test_bench_rows_split_every_model_and_write_the_issue_fields(tmp_path, capsys, monkeypatch):
    """On models whose ResNet has one bottleneck per stage (the split is the point, not the depth)."""
    init = ResNet.__init__
    monkeypatch.setattr(ResNet, "__init__", lambda self, layers=None, **kwargs: init(self, (1, 1, 1, 1), **kwargs))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a second thread only waits for the first on a machine shared with other jobs
    out = tmp_path / "flops.json"
    args = flops.get_args_parser().parse_args(["--input-size", "33,33", "--num-classes", "5", "--json", str(out),
                                               "--model", "ccnet", "--model", "pspnet", "--model", "deeplabv3"])
    try:
        flops.main(flops.fill_defaults(args))
    finally:
        torch.set_num_threads(threads)
    record = json.loads(out.read_text())
    assert {"device", "torch", "date", "settings", "rows"} <= record.keys()
    rows = {r["name"]: r for r in record["rows"]}
    assert list(rows) == ["cca", "rcca-r1", "rcca-r2", "non-local", "backbone", "dsn", "ccnet head", "ccnet",
                          "pspnet head", "pspnet", "deeplabv3 head", "deeplabv3"]
    for r in rows.values():
        assert {"name", "input", "params", "flops", "forward_peak_mb", "train_peak_mb"} <= r.keys()
        assert r["train_flops"] > 2 * r["flops"] > 0 and r["train_peak_mb"] > 0 and r["forward_ms"] > 0
        assert "paper_flops" not in r  # the paper's figures are for its input only
    assert rows["cca"]["input"] == [1, 512, 5, 5] and rows["ccnet"]["input"] == [1, 3, 33, 33]
    for model in ("ccnet", "pspnet", "deeplabv3"):
        parts = [rows["backbone"], rows["dsn"], rows[f"{model} head"]]
        assert rows[model]["params"] == sum(p["params"] for p in parts)
        assert rows[model]["flops"] == sum(p["flops"] for p in parts)
    assert rows["ccnet head"]["flops"] > rows["rcca-r2"]["flops"]  # the passes, and the convolutions around them
    assert "non-local / rcca-r2:" in capsys.readouterr().out


def test_on_cuda_a_row_also_holds_the_allocator_peaks(monkeypatch, capsys):
    """The CUDA path on the CPU: the allocator's peak mocked, the probe's and the count real."""
    monkeypatch.setattr(flops, "cuda_peak_mb", lambda fn, device: (fn(), 7.0)[1])
    monkeypatch.setattr(flops.common, "synchronize", lambda device: None)
    features = torch.randn(1, 16, 5, 7)
    rows = [flops.measure(part, torch.device("cuda"), repeat=1, warmup=0) for part in attention_parts(features)]
    assert all(r["forward_cuda_peak_mb"] == r["train_cuda_peak_mb"] == 7.0 for r in rows)
    assert flops.compare(rows)["train_cuda_peak_mb"] == 1.0
    flops.print_rows("header", rows)
    assert "train CUDA MiB" in capsys.readouterr().out
