"""Export a trained CCNet to ONNX, criss-cross attention included, in standard ONNX operators.

    pip install -r requirements-onnx.txt
    python export_onnx.py --restore-from snapshots/CS_scenes_60000.pth --output ccnet.onnx

The ONNX model maps ``images`` (B, 3, H, W) float32 (BGR minus the training mean, as
dataset.datasets.normalize gives) to ``logits`` (B, K, H, W) float32, upsampled to the image as
utils.inference.predict_whole does (with the network's align_corners); batch, height and width are
dynamic. Model, classes, recurrence, layout and depth come from the checkpoint where it holds them
(networks/from_checkpoint.py; an mmsegmentation file's network converts the input to its RGB inside).
torch.export traces the network (CC.py then runs its forward as batched tensor ops instead of the
per-image loop of its autograd Function), and torch's dynamo exporter converts the graph. When
onnxruntime is installed, the script runs the sample batch through both and prints the largest
difference.
"""
import os
import time

import torch
from torch import nn

from networks.from_checkpoint import add_checkpoint_arguments, build_from_checkpoint, describe
from utils.cli import ArgumentParser, positive_int
from utils.errors import UserError, exit_on_user_error
from utils.inference import predict_whole

OPSET = 18
SAMPLE_SIZE = (2, 3, 65, 97)  # traced batch: a batch of 1 would be taken for a constant


class Logits(nn.Module):
    """(B, 3, H, W) images -> (B, K, H, W) float32 logits of the network's main output (predict_whole)."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, images):
        return predict_whole(self.network, images)


def require_exporter():
    """Raise a UserError naming what to install when onnx or onnxscript is missing."""
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            raise UserError(f"ONNX export needs the {name} package: pip install -r requirements-onnx.txt") from None


def export_onnx(network, path, opset=OPSET, sample=None):
    """Write the network in eval mode as ONNX to ``path``, weights included (through a temporary
    file), with dynamic batch, height and width; sample: the traced (B >= 2, 3, H, W) batch (default random, SAMPLE_SIZE)."""
    require_exporter()
    model = Logits(network).eval()
    if sample is None:
        sample = torch.randn(SAMPLE_SIZE, generator=torch.Generator().manual_seed(0))
    dynamic = torch.export.Dim.DYNAMIC
    partial = f"{path}.partial"
    try:
        with torch.no_grad():
            torch.onnx.export(model, (sample,), partial, dynamo=True, opset_version=opset, input_names=["images"],
                              output_names=["logits"], dynamic_shapes=({0: dynamic, 2: dynamic, 3: dynamic},),
                              external_data=False, verbose=False)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def onnx_difference(network, path, images):
    """max |ONNX logits - PyTorch logits| / max |PyTorch logits| on images (B, 3, H, W), through
    onnxruntime on the CPU; None when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    ours = torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])
    with torch.no_grad():
        theirs = Logits(network).eval()(images)
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


def get_args_parser():
    parser = ArgumentParser(description="Export a trained CCNet to ONNX", allow_abbrev=False)
    add_checkpoint_arguments(parser.add_argument_group("model"))
    onnx = parser.add_argument_group("ONNX")
    onnx.add_argument("--output", default="ccnet.onnx", help="the ONNX file to write")
    onnx.add_argument("--opset", type=positive_int, default=OPSET, help="ONNX opset version")
    return parser


def main(args):
    require_exporter()
    network, settings = build_from_checkpoint(args.restore_from, args.model, args.num_classes, args.recurrence,
                                              align_corners=args.align_corners)
    print(f"{args.restore_from}: {describe(settings)}")
    start = time.perf_counter()
    export_onnx(network, args.output, args.opset)
    print(f"wrote {args.output} ({settings['model']}, {settings['num_classes']} classes, recurrence "
          f"{settings['recurrence']}, opset {args.opset}) in {time.perf_counter() - start:.0f} s")
    images = torch.randn(1, 3, 49, 81, generator=torch.Generator().manual_seed(1))
    difference = onnx_difference(network, args.output, images)
    if difference is None:
        print("onnxruntime is not installed: the export was not run (pip install onnxruntime)")
    else:
        print(f"onnxruntime against PyTorch on a (1, 3, 49, 81) batch: largest difference {difference:.1e} "
              "of the largest logit")


if __name__ == "__main__":
    exit_on_user_error(main)(get_args_parser().parse_args())
