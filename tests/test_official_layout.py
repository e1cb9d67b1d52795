"""The official CCNet layout (norm="inplace-abn"): its keys, its checkpoints, a whole training step
against out-of-place InPlace-ABN, and its peak memory against upstream's layout."""
import copy
import pathlib

import pytest
import torch
import torch.nn as nn

import networks
from abn_formula import abn_formula
from bench.common import peak_mb
from sync_batchnorm import InPlaceABN, InPlaceABNSync
from utils.checkpoint import load_model, read_state_dict
from utils.losses import CriterionDSN

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A copy of shared/spec/official_ccnet_resnet101_state_dict.tsv and shared/spec/ccnet_resnet101_state_dict.tsv.
OFFICIAL_SPEC = ROOT / "tests" / "data" / "official_ccnet_resnet101_state_dict.tsv"
UPSTREAM_SPEC = ROOT / "tests" / "data" / "ccnet_resnet101_state_dict.tsv"


def _spec(path):
    """{key: shape} of a published key list, in file order."""
    rows = [line.split("\t") for line in path.read_text().splitlines() if not line.startswith("#")]
    return {key: tuple(int(n) for n in shape.split("x")) for key, shape in rows}


def _randomize(model, seed):
    """Norm weights of both signs and zero, running statistics away from (0, 1) and a working
    attention, so that the layouts' formulas and a wrong load would show in the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, InPlaceABN):
                channels = module.num_features
                module.weight.copy_(torch.rand(channels, generator=generator) * 2 - 1)
                module.weight[0] = 0
                module.bias.copy_(torch.rand(channels, generator=generator) * 0.2 - 0.1)
                module.running_mean.copy_(torch.rand(channels, generator=generator) * 0.2 - 0.1)
                module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
        model.head.cca.gamma.fill_(0.5)
    return model


@pytest.fixture(scope="module")
def official():
    torch.manual_seed(0)
    return _randomize(networks.build_model("ccnet", 19, recurrence=2, norm="inplace-abn"), seed=1).eval()


def test_state_dict_is_exactly_the_official_keys_and_shapes(official):
    ours = {k: tuple(v.shape) for k, v in official.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert list(ours.items()) == list(_spec(OFFICIAL_SPEC).items())


def test_backbone_norms_are_identity_and_head_norms_leaky_relu_without_relu_modules(official):
    head_norms = [official.head.conva[1], official.head.convb[1], official.head.bottleneck[1], official.dsn[1]]
    assert all(type(m) is InPlaceABNSync and (m.activation, m.activation_param) == ("leaky_relu", 0.01)
               for m in head_norms)
    backbone = [m for name, m in official.named_modules() if isinstance(m, InPlaceABN)
                and not name.startswith(("head.", "dsn."))]
    backbone_keys = [k for k in _spec(OFFICIAL_SPEC)
                     if k.endswith(".running_mean") and not k.startswith(("head.", "dsn."))]
    assert len(backbone) == len(backbone_keys) and all(m.activation == "identity" for m in backbone)
    assert not any(isinstance(m, nn.ReLU) for m in (*official.head.modules(), *official.dsn.modules()))
    # The InPlace-ABN before each ReLU keeps its output for its backward: the ReLU must not overwrite it.
    assert all(not m.inplace for m in official.modules() if isinstance(m, nn.ReLU))


def test_layout_of_names_the_layout_by_its_classifier_keys():
    assert networks.layout_of(_spec(OFFICIAL_SPEC)) == "inplace-abn"
    assert networks.layout_of(_spec(UPSTREAM_SPEC)) == "syncbn"
    assert networks.layout_of({k: v for k, v in _spec(UPSTREAM_SPEC).items() if not k.startswith("dsn.")}) is None


def test_saved_and_reloaded_gives_identical_logits(official, tmp_path):
    torch.save(official.state_dict(), tmp_path / "CS_scenes_1.pth")
    state = read_state_dict(tmp_path / "CS_scenes_1.pth")
    norm = networks.layout_of(state)
    # As evaluate.py builds it: the unsynchronized norm of the layout the keys name.
    loaded = networks.build_model("ccnet", 19, recurrence=2, norm=norm,
                                  norm_layer=networks.single_device_norm_layer(norm)).eval()
    assert load_model(loaded, state, strict=True) == ([], [])
    image = torch.randn(1, 3, 33, 33, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for ours, theirs in zip(loaded(image), official(image)):
            torch.testing.assert_close(ours, theirs, atol=0, rtol=0)


class FormulaABN(nn.Module):
    """An InPlaceABN's parameters and buffers under the out-of-place formula (training mode)."""

    def __init__(self, abn):
        super().__init__()
        self.abn = abn

    def forward(self, x):
        abn = self.abn
        out, (mean, var) = abn_formula(x, abn.weight, abn.bias, abn.eps, abn.activation, abn.activation_param)
        with torch.no_grad():
            abn.num_batches_tracked.add_(1)
            abn.running_mean.lerp_(mean, abn.momentum)
            abn.running_var.lerp_(var, abn.momentum)
        return out


def _with_formula_norms(model):
    """``model`` with each InPlace-ABN layer wrapped to compute the formula out of place (same tensors)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, InPlaceABN):
                setattr(module, name, FormulaABN(child))
    return model


def test_a_training_step_equals_the_out_of_place_composition(official):
    """In-place writes must not corrupt what the residual branches, the downsample paths and the
    head's concatenation still need. In float64: the image gradient (which crosses every layer), the
    gradients of the norms and the stem convolution, and the running statistics, as out of place.
    The other convolutions are frozen to keep the test's memory small."""
    model = copy.deepcopy(official).double().train()
    for name, param in model.named_parameters():
        param.requires_grad_(param.dim() == 1 or name == "conv1.weight")
    buffers = [b.clone() for b in model.buffers()]
    image = torch.randn(2, 3, 17, 17, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    steps = []
    for _ in ("in place", "out of place"):
        torch.manual_seed(6)  # the same dropout masks
        leaf = image.clone().requires_grad_()
        main, dsn = model(leaf)
        (main.square().mean() + dsn.mean()).backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        steps.append([main.detach(), leaf.grad, *grads, *(b.clone() for b in model.buffers())])
        model.zero_grad(set_to_none=True)
        for b, saved in zip(model.buffers(), buffers):
            b.copy_(saved)
        model = _with_formula_norms(model)
    for ours, reference in zip(*steps):
        torch.testing.assert_close(ours, reference, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("name", ["pspnet", "deeplabv3"])
def test_siblings_take_the_official_layout_and_train(name):
    """PSPNet and DeepLabv3 as the official repository defines them: InPlace-ABN with leaky ReLU in
    the head and the DSN classifier at dsn.3; one training step runs through the in-place layers."""
    torch.manual_seed(3)
    model = networks.build_model(name, 7, norm="inplace-abn").train()
    keys = model.state_dict().keys()
    assert {"dsn.3.weight", "dsn.3.bias", "head.1.weight"} <= keys and not any(k.startswith("dsn.4.") for k in keys)
    assert not any(isinstance(m, nn.ReLU) for m in (*model.head.modules(), *model.dsn.modules()))
    assert all(m.activation == "leaky_relu" for m in model.head.modules() if isinstance(m, InPlaceABN))
    main, dsn = model(torch.randn(2, 3, 17, 17, generator=torch.Generator().manual_seed(4)))
    (main.sum() + dsn.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_training_step_peak_memory_is_at_most_upstream_layout():
    """The bench's peak-memory probe over one forward and backward with the loss, same input."""
    image = torch.randn(2, 3, 65, 65, generator=torch.Generator().manual_seed(7))
    labels = torch.randint(0, 19, (2, 65, 65), generator=torch.Generator().manual_seed(8))
    peaks = {}
    for norm in ("syncbn", "inplace-abn"):
        torch.manual_seed(0)
        model = networks.build_model("ccnet", 19, criterion=CriterionDSN(), recurrence=2, norm=norm).train()
        peaks[norm] = peak_mb(lambda: model(image, labels).backward(), torch.device("cpu"))
    print(f"peak MiB of one training step at 2x3x65x65: {peaks}")
    assert peaks["inplace-abn"] <= peaks["syncbn"]
