"""utils.checkpoint.load_model: our snapshots, official-style snapshots, MIT ImageNet weights, bad files."""
import pytest
import torch
import torch.nn as nn

import networks
from networks.resnet import ResNet
from utils.checkpoint import load_model
from utils.errors import UserError


def _small(num_classes=19):
    """conv-BN-classifier with the key names of a DSN head: 0.weight, 1.*, 2.weight, 2.bias."""
    torch.manual_seed(num_classes)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, num_classes, 1))
    model[1].running_mean.uniform_()
    return model


def _assert_same_tensors(state, model):
    own = model.state_dict()
    for key, value in state.items():
        assert torch.equal(own[key], value), key


def test_round_trip_gives_the_same_tensors_and_logits(tmp_path):
    torch.manual_seed(0)
    saved = networks.build_model("ccnet", 19, recurrence=2, norm_layer=nn.BatchNorm2d).eval()
    with torch.no_grad():
        saved.head.cca.gamma.fill_(0.3)
        for module in saved.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
    torch.save(saved.state_dict(), tmp_path / "CS_scenes_1.pth")
    loaded = networks.build_model("ccnet", 19, recurrence=2, norm_layer=nn.BatchNorm2d).eval()
    assert load_model(loaded, tmp_path / "CS_scenes_1.pth", strict=True) == ([], [])
    _assert_same_tensors(saved.state_dict(), loaded)
    image = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        for ours, theirs in zip(loaded(image), saved(image)):
            torch.testing.assert_close(ours, theirs, atol=0, rtol=0)


def test_mit_imagenet_file_fills_the_backbone_and_ignores_fc(tmp_path, capsys):
    torch.manual_seed(1)
    imagenet = {k: v for k, v in ResNet().state_dict().items() if not k.endswith("num_batches_tracked")}
    imagenet.update({"fc.weight": torch.randn(1000, 2048), "fc.bias": torch.randn(1000)})
    torch.save(imagenet, tmp_path / "resnet101-imagenet.pth")
    model = networks.build_model("ccnet", 19, norm_layer=nn.BatchNorm2d)
    missing, unexpected = load_model(model, str(tmp_path / "resnet101-imagenet.pth"))
    heads = [k for k in model.state_dict() if k.startswith(("head.", "dsn.")) and "num_batches" not in k]
    assert missing == heads and unexpected == []
    _assert_same_tensors({k: v for k, v in imagenet.items() if not k.startswith("fc.")}, model)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 and f"{len(heads)} model keys not in the checkpoint" in printed[0]


def test_module_prefixed_state_dict_under_a_wrapper_loads(tmp_path, capsys):
    source = _small()
    wrapped = {"state_dict": {"module." + k: v for k, v in source.state_dict().items()}, "iteration": 7}
    torch.save(wrapped, tmp_path / "last.pth")
    model = _small(19)
    with torch.no_grad():
        model[0].weight.zero_()
    assert load_model(model, tmp_path / "last.pth", strict=True) == ([], [])
    _assert_same_tensors(source.state_dict(), model)
    assert capsys.readouterr().out == ""


def test_state_dict_under_model_key_in_memory_loads():
    source = _small()
    model = _small(19)
    with torch.no_grad():
        model[2].bias.zero_()
    assert load_model(model, {"model": source.state_dict()}) == ([], [])
    _assert_same_tensors(source.state_dict(), model)


def test_absent_num_batches_tracked_is_not_missing(capsys):
    state = {k: v for k, v in _small().state_dict().items() if not k.endswith("num_batches_tracked")}
    assert load_model(_small(), state, strict=True) == ([], [])
    assert capsys.readouterr().out == ""


def test_wrong_shape_is_skipped_and_reported_on_one_line(capsys):
    model = _small(21)
    kept = model[2].weight.clone()
    missing, unexpected = load_model(model, _small(19).state_dict())
    assert missing == [] and unexpected == ["2.weight", "2.bias"]
    assert torch.equal(model[2].weight, kept)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 and "2.weight (19, 4, 1, 1) vs model (21, 4, 1, 1)" in printed[0]


def test_strict_rejects_a_checkpoint_that_does_not_fit():
    with pytest.raises(UserError, match="2 keys of another shape"):
        load_model(_small(21), _small(19).state_dict(), strict=True)
    partial = {k: v for k, v in _small().state_dict().items() if not k.startswith("2.")}
    with pytest.raises(UserError, match=r"2 model keys missing \(2.weight, 2.bias\)"):
        load_model(_small(), partial, strict=True)


def test_missing_file_is_a_user_error_naming_it(tmp_path):
    path = tmp_path / "CS_scenes_60000.pth"
    with pytest.raises(UserError, match="checkpoint not found: .*CS_scenes_60000.pth"):
        load_model(_small(), path)


def test_unreadable_file_is_a_user_error_naming_it(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read checkpoint .*broken.pth"):
        load_model(_small(), path)


def test_file_without_a_state_dict_is_a_user_error(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(UserError, match="list.pth does not hold a state_dict"):
        load_model(_small(), tmp_path / "list.pth")
