"""CCNet (R=2) inference throughput against upstream's evaluation, and fp32/bf16 prediction agreement.

    python bench/bench_eval.py                                       # CPU: 129x257 image, 97x97 tiles
    python bench/bench_eval.py --device cuda --json bench_eval.json  # GPU: 1024x2048 image, 769x769 tiles
    python bench/bench_eval.py --agreement                           # fp32 vs bf16 on the synthetic val set

Throughput: images/s of whole-image and sliding-window prediction of one synthetic image, from a
host tensor to host class ids, as evaluate.py does it (utils.inference.predict, argmax on the
device) in strict fp32, under bf16 autocast, and under bf16 autocast with channels_last; beside
upstream's evaluate.py path (bench.upstream_baseline.upstream_predict, fp32). All rows share the same
random weights and are timed in interleaved rounds.

Agreement: the fraction of pixels of the synthetic validation set (dataset.synthetic, or
--data-dir) whose whole-image class is the same in fp32 and under bf16 autocast, with the trained
weights of --restore-from (demo.sh trains some). Random weights are no test: their BN statistics
amplify every rounding difference block after block, so their bf16 and fp32 predictions part
whatever the op precision.
"""
import copy
import datetime
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import networks  # noqa: E402
from bench import common  # noqa: E402
from bench.common import (NUM_CLASSES, add_json_argument, add_measurement_arguments, benchmark_device,  # noqa: E402
                          interleaved_median_ms, print_table, save_record, set_tf32, with_tf32)
from bench.upstream_baseline import to_upstream_style, upstream_predict  # noqa: E402
from dataset.datasets import IMG_MEAN, CSDataValSet  # noqa: E402
from dataset.synthetic import make_synthetic_cityscapes  # noqa: E402
from utils.checkpoint import load_model  # noqa: E402
from utils.cli import ArgumentParser, positive_int, size_pair  # noqa: E402
from utils.errors import UserError, exit_on_user_error  # noqa: E402
from utils.inference import predict  # noqa: E402
from utils.runtime import autocast, device_name, memory_format  # noqa: E402


def build(args, device):
    """CCNet with plain BN in eval mode on the device, weights from --restore-from when given."""
    model = networks.build_model("ccnet", NUM_CLASSES, recurrence=args.recurrence, norm_layer=nn.BatchNorm2d)
    if args.restore_from:
        load_model(model, args.restore_from, strict=True)
    return model.to(device).eval()


def our_predictor(model, images, tile_size, amp, channels_last, device):
    """A closure: host images (N, 3, H, W) -> host class ids (N, H, W) uint8 through utils.inference."""
    layout = memory_format(channels_last)
    model = copy.deepcopy(model).to(memory_format=layout)
    context = autocast(device, amp)

    @torch.no_grad()
    def run():
        with context:
            batch = images.to(device, memory_format=layout)
            return predict(model, batch, tile_size).argmax(1).to(torch.uint8).cpu()
    return run


def throughput(args, device):
    """Rows of ms and images/s per (mode, configuration), the upstream-style row first in each mode."""
    model = build(args, device)
    upstream_model = to_upstream_style(copy.deepcopy(model)).eval()
    images = torch.randn(args.batch, 3, *args.image_size, generator=torch.Generator().manual_seed(0))
    host = images.numpy()
    rows, fns = [], []
    for mode, tile in (("whole", None), ("sliding", args.tile)):
        configs = [("upstream-style baseline, fp32", False, lambda t=tile: upstream_predict(
                        upstream_model, host, t or args.image_size, NUM_CLASSES)),
                   ("ours, fp32", False, our_predictor(model, images, tile, False, False, device)),
                   ("ours, bf16 autocast", True, our_predictor(model, images, tile, True, False, device)),
                   ("+ channels_last", True, our_predictor(model, images, tile, True, True, device))]
        for name, tf32, fn in configs:
            rows.append({"mode": mode, "configuration": name})
            fns.append(with_tf32(fn, device, tf32))
    for row, ms in zip(rows, interleaved_median_ms(fns, device, args.repeat, args.warmup)):
        row.update(ms=ms, images_per_s=args.batch * 1e3 / ms)
    for row in rows:
        base = next(r for r in rows if r["mode"] == row["mode"])
        row["speedup"] = row["images_per_s"] / base["images_per_s"]
    return rows


def validation_set(args, workdir):
    """The labelled images of --data-dir's list, or of a synthetic Cityscapes written to workdir."""
    if args.data_dir:
        return CSDataValSet(args.data_dir, str(Path(args.data_dir) / args.data_list), mean=IMG_MEAN)
    lists = make_synthetic_cityscapes(workdir, num_val=args.num_val, num_test=0, height=args.synthetic_size[0],
                                      width=args.synthetic_size[1])
    return CSDataValSet(workdir, lists["val"], mean=IMG_MEAN)


@torch.no_grad()
def agreement(args, device):
    """Pixels of the validation set predicted alike in fp32 and under bf16 autocast (whole image)."""
    with tempfile.TemporaryDirectory() as workdir:
        dataset = validation_set(args, workdir)
        images = [torch.from_numpy(dataset[i][0]).unsqueeze(0).to(device) for i in range(len(dataset))]
    model = build(args, device)
    set_tf32(device, False)
    same = total = 0
    per_image = []
    for image in images:  # (1, 3, H, W)
        fp32 = predict(model, image).argmax(1)  # (1, H, W)
        with autocast(device, True):
            bf16 = predict(model, image).argmax(1)
        equal = (fp32 == bf16).sum().item()
        same, total = same + equal, total + fp32.numel()
        per_image.append(equal / fp32.numel())
    return {"images": len(images), "pixels": total, "agreeing_pixels": same, "agreement": same / total,
            "worst_image_agreement": min(per_image), "weights": args.restore_from}


def main(args):
    if args.agreement and not args.restore_from:
        raise UserError("--agreement needs --restore-from: a trained CCNet checkpoint (demo.sh writes one)")
    if args.restore_from and not Path(args.restore_from).is_file():
        raise UserError(f"--restore-from {args.restore_from}: no such file")
    device = benchmark_device(args)
    today = datetime.date.today()
    if args.agreement:
        result = agreement(args, device)
        print(f"{device_name(device)}, torch {torch.__version__}, {today}: fp32 vs bf16 autocast, "
              f"{result['images']} images, weights: {result['weights']}")
        print(f"agreement {100 * result['agreement']:.4f}% of {result['pixels']} pixels "
              f"(worst image {100 * result['worst_image_agreement']:.4f}%)")
        if args.json:
            save_record(args.json, device, {"check": "agreement", "recurrence": args.recurrence}, [result])
        return result

    rows = throughput(args, device)
    height, width = args.image_size
    header = (f"{device_name(device)}, torch {torch.__version__}, {today}: CCNet R={args.recurrence} inference, "
              f"batch {args.batch}, image {height}x{width}, sliding tiles {args.tile[0]}x{args.tile[1]}")
    print_table(header, rows, [("configuration", "configuration", ""), ("mode", "mode", ""), ("ms", "ms", ".1f"),
                               ("images_per_s", "images/s", ".2f"), ("speedup", "x baseline", ".2f")])
    if args.json:
        settings = {"model": "ccnet", "recurrence": args.recurrence, "batch": args.batch,
                    "image": [height, width], "tile": list(args.tile), "repeat": args.repeat,
                    "warmup": args.warmup}
        save_record(args.json, device, settings, rows)
    set_tf32(device, True)
    return rows


def get_args_parser():
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    sizes = parser.add_argument_group("sizes")
    sizes.add_argument("--batch", type=positive_int, default=1, help="images per prediction")
    sizes.add_argument("--image-size", type=size_pair, default=None,
                       help="HEIGHT,WIDTH of the image (default 129,257 on CPU, 1024,2048 on GPU)")
    sizes.add_argument("--tile", type=size_pair, default=None,
                       help="sliding-window tile HEIGHT,WIDTH (default 97,97 on CPU, 769,769 on GPU)")
    sizes.add_argument("--recurrence", type=int, default=2, help="criss-cross attention passes")
    sizes.add_argument("--restore-from", default=None,
                       help="CCNet checkpoint, required by --agreement (default: random weights, for throughput)")
    add_measurement_arguments(parser, "timed rounds, median (default 3 CPU, 20 GPU)",
                              "untimed rounds first (default 1 CPU, 3 GPU)")
    agreement = parser.add_argument_group("agreement")
    agreement.add_argument("--agreement", action="store_true",
                           help="measure fp32 vs bf16 prediction agreement instead of throughput")
    agreement.add_argument("--data-dir", default=None,
                           help="agreement: Cityscapes-layout root (default: write a synthetic one to a temp dir)")
    agreement.add_argument("--data-list", default="list/val.lst", help="agreement: list file under --data-dir")
    agreement.add_argument("--num-val", type=int, default=10, help="agreement: synthetic validation images")
    agreement.add_argument("--synthetic-size", type=size_pair, default=(256, 512),
                           help="agreement: synthetic image HEIGHT,WIDTH")
    add_json_argument(parser)
    return parser


CPU_DEFAULTS = {"image_size": (129, 257), "tile": (97, 97), "repeat": 3, "warmup": 1}
GPU_DEFAULTS = {"image_size": (1024, 2048), "tile": (769, 769), "repeat": 20, "warmup": 3}


def fill_defaults(args):
    """The CPU or GPU default of every option left unset."""
    return common.fill_defaults(args, CPU_DEFAULTS, GPU_DEFAULTS)


if __name__ == "__main__":
    exit_on_user_error(main)(fill_defaults(get_args_parser().parse_args()))
