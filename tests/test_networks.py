"""CCNet (and its PSPNet / DeepLabv3 siblings): shapes, checkpoint keys, parameters, recurrence, loss."""
import pathlib

import pytest
import torch
import torch.nn as nn

import networks
from networks.ccnet import RCCAModule
from networks.norms import make_layout
from sync_batchnorm import SynchronizedBatchNorm2d
from utils.errors import UserError

BATCHNORM_RELU = make_layout("syncbn", nn.BatchNorm2d)  # plain BN + ReLU after each head conv

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The published key/shape list (a copy of shared/spec/ccnet_resnet101_state_dict.tsv).
SPEC = ROOT / "tests" / "data" / "ccnet_resnet101_state_dict.tsv"


def _spec():
    """{key: shape} of the published 19-class CCNet, in file order."""
    rows = [line.rstrip("\n").split("\t") for line in SPEC.read_text().splitlines(True) if not line.startswith("#")]
    return {key: tuple(int(n) for n in shape.split("x")) for key, shape in rows}


@pytest.fixture(scope="module")
def ccnet():
    torch.manual_seed(0)
    model = networks.build_model("ccnet", 19, recurrence=2, norm_layer=nn.BatchNorm2d).eval()
    with torch.no_grad():
        model.head.cca.gamma.fill_(0.5)  # so that the attention changes the output
    return model


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 97, 97, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def outputs(ccnet, image):
    with torch.no_grad():
        return ccnet(image)


def test_ccnet_returns_main_and_dsn_logits_at_one_eighth(outputs):
    assert [tuple(o.shape) for o in outputs] == [(1, 19, 13, 13), (1, 19, 13, 13)]


def test_state_dict_keys_and_shapes_are_the_published_ones(ccnet):
    ours = {k: tuple(v.shape) for k, v in ccnet.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert list(ours.items()) == list(_spec().items())


def test_parameter_count_is_the_spec_without_running_stats(ccnet):
    expected = sum(torch.Size(shape).numel() for key, shape in _spec().items() if ".running_" not in key)
    assert sum(p.numel() for p in ccnet.parameters()) == expected == 71_287_911


def test_recurrence_applies_the_one_attention_module_that_many_times(ccnet, image):
    head = ccnet.head
    with torch.no_grad():
        c3, c4 = super(type(ccnet), ccnet).forward(image)
        mains = []
        for recurrence in (0, 1, 2):
            calls = []
            hook = head.cca.register_forward_hook(lambda module, args, out: calls.append(out))
            head.recurrence = recurrence
            try:
                mains.append(head(c4))
            finally:
                head.recurrence = 2
                hook.remove()
            x = head.conva(c4)
            for _ in range(recurrence):
                x = head.cca(x)
            expected = head.bottleneck(torch.cat([c4, head.convb(x)], dim=1))
            assert len(calls) == recurrence
            torch.testing.assert_close(mains[-1], expected, atol=0, rtol=0)
    assert not torch.allclose(mains[0], mains[1]) and not torch.allclose(mains[1], mains[2])


def test_criterion_with_labels_returns_its_loss(ccnet, image, outputs):
    labels = torch.zeros(1, 97, 97, dtype=torch.long)
    seen = []

    def criterion(preds, target):
        seen.append((preds, target))
        return sum(p.sum() for p in preds)

    ccnet.criterion = criterion
    try:
        with torch.no_grad():
            loss = ccnet(image, labels)
    finally:
        ccnet.criterion = None
    assert len(seen) == 1 and seen[0][1] is labels
    torch.testing.assert_close(loss, outputs[0].sum() + outputs[1].sum(), atol=0, rtol=0)


def test_default_norm_layer_is_synchronized_batchnorm():
    model = networks.ccnet.Seg_Model(3)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(isinstance(m, SynchronizedBatchNorm2d) for m in norms)
    assert all(m.momentum == 0.1 and m.eps == 1e-5 for m in norms)


def test_unknown_model_name_is_a_user_error_naming_the_known_ones():
    with pytest.raises(UserError, match="ccnet, deeplabv3, pspnet"):
        networks.build_model("ccnett", 19)


@pytest.mark.parametrize("name", ["pspnet", "deeplabv3"])
def test_sibling_models_return_main_and_dsn_logits_at_one_eighth(name):
    model = networks.build_model(name, 7, norm_layer=nn.BatchNorm2d).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 33, 33))
    assert [tuple(o.shape) for o in outs] == [(1, 7, 5, 5), (1, 7, 5, 5)]


def test_channels_last_gives_the_same_logits(ccnet, image, outputs):
    ccnet.to(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            main, dsn = ccnet(image.contiguous(memory_format=torch.channels_last))
    finally:
        ccnet.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(main, outputs[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dsn, outputs[1], atol=1e-4, rtol=1e-4)


def test_recurrence_0_freezes_the_unused_attention_and_its_checkpoint_runs_with_recurrence_2():
    """DistributedDataParallel needs a gradient for every trainable parameter; a recurrence-0 head
    never runs its attention. Its checkpoint keeps the attention's keys, with gamma 0."""
    torch.manual_seed(0)
    head0 = RCCAModule(64, 3, BATCHNORM_RELU, recurrence=0)
    x = torch.randn(2, 64, 5, 6)
    head0(x).sum().backward()
    trainable = {name for name, p in head0.named_parameters() if p.requires_grad}
    assert trainable == {name for name, p in head0.named_parameters() if p.grad is not None}
    assert not any(name.startswith("cca.") for name in trainable)
    head2 = RCCAModule(64, 3, BATCHNORM_RELU, recurrence=2)
    head2.load_state_dict(head0.state_dict())
    assert all(p.requires_grad for p in head2.parameters())
    head0.eval(), head2.eval()
    with torch.no_grad():
        assert torch.equal(head2(x), head0(x))
