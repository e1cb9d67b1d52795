"""export_onnx.py: onnxruntime's logits against PyTorch's for a small network with CCNet's RCCA head."""
import sys

import pytest
import torch
from torch import nn

import export_onnx
from networks.ccnet import RCCAModule
from networks.norms import make_layout
from utils.errors import exit_on_user_error

BATCHNORM_RELU = make_layout("syncbn", nn.BatchNorm2d)  # plain BN + ReLU after each head conv


class SmallCCNet(nn.Module):
    """A stride-8 convolution in place of the ResNet-101 backbone, then CCNet's head (R=2) as in
    Seg_Model: (B, 3, H, W) -> [logits (B, 5, h, w)]. Exporting the full ResNet-101 takes minutes
    on a 2-core CPU; the attention, the only part export_onnx.py changes the path of, is the same."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Conv2d(3, 64, 3, stride=8, padding=1)
        self.head = RCCAModule(64, 5, BATCHNORM_RELU, recurrence=2)
        self.head.cca.gamma.data.fill_(1.0)

    def forward(self, images):
        return [self.head(self.backbone(images))]


def test_onnxruntime_logits_equal_pytorch_for_two_sizes_and_batches(tmp_path):
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    network = SmallCCNet().eval()
    path = str(tmp_path / "small.onnx")
    export_onnx.export_onnx(network, path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    for shape in [(1, 3, 41, 73), (3, 3, 64, 24)]:
        images = torch.randn(shape, generator=generator)
        with torch.no_grad():
            expected = export_onnx.Logits(network)(images)  # (B, 5, H, W)
        logits = torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])
        assert logits.shape == expected.shape
        assert (logits - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert export_onnx.onnx_difference(network, path, images) <= 1e-4


def test_without_the_exporter_packages_the_script_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    args = export_onnx.get_args_parser().parse_args(["--restore-from", "unused.pth"])
    with pytest.raises(SystemExit) as stop:
        exit_on_user_error(export_onnx.main)(args)
    err = capsys.readouterr().err
    assert stop.value.code == 1 and err.count("\n") == 1
    assert "requirements-onnx.txt" in err
