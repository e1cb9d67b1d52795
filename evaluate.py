"""Evaluate a CCNet checkpoint on Cityscapes (or Pascal VOC, ADE20K, a folder: --dataset): per-class IoU
and accuracy with the dataset's class names, mIoU, mean and pixel accuracy, the confusion matrix,
predicted PNGs in its palette.

CCNet: Criss-Cross Attention for Semantic Segmentation (Huang et al., ICCV 2019). The command of
upstream's README runs as written (leave out --gpu on a machine without CUDA):

    python evaluate.py --data-dir /data/datasets/Cityscapes/ --recurrence 2 --model ccnet \
        --restore-from ./snapshots/CS_scenes_60000.pth --whole Ture --gpu 0 --recurrence 2 --batch-size 1

Prediction is sliding-window over --input-size tiles by default, whole-image with --whole true;
--scales and --flip average the class probabilities over resized and mirrored copies. Under
torchrun each process evaluates its own share of the images and the confusion matrices are summed.
Writes <dirname of --Output>/outputs/<name>.png (palette PNG of train ids), and next to the
checkpoint result.txt (JSON {"meanIU", "IU_array", "meanAcc", "Acc_array"}) and confusion_matrix.csv
(pixel counts, rows the true classes, columns the predicted ones; --confusion-figure also draws it
row-normalized as confusion_matrix.png); --test predicts the unlabelled test split and also
writes outputs/label_ids/<name>.png in the dataset's label values (Cityscapes: official label ids)
for the benchmark server. The checkpoint's keys tell its layout and depth (networks.norms,
networks/from_checkpoint.py), so the released official CCNet models (InPlace-ABN) and mmsegmentation's
model zoo files evaluate as they are; --rescale and --input-size reproduce mmsegmentation's test modes.
"""
import argparse
import functools
import importlib.util
import json
import os
import time

import torch
from PIL import Image

import networks
from dataset.datasets import IMG_MEAN
from dataset.registry import add_dataset_argument, fill_defaults, get_dataset
from networks.from_checkpoint import add_align_corners_argument, build_from_checkpoint, describe
from utils.cli import ArgumentParser, label_value, str2bool
from utils.confusion_files import save_confusion_figure, write_confusion_csv
from utils.data_parallel import AutocastDataParallel
from utils.errors import UserError, exit_on_user_error
from utils.evaluation import InferenceSettings, class_labels, evaluate, shard_loader
from utils.inference import add_inference_arguments
from utils.metrics import ConfusionMatrix
from utils.runtime import add_launcher_arguments, add_speed_arguments, memory_format, setup, teardown

UPSTREAM_README_SPELLINGS_OF_TRUE = {"ture"}


def whole_flag(text):
    """--whole value: any str2bool spelling, or 'Ture' as written in the command of upstream's README."""
    if text.strip().lower() in UPSTREAM_README_SPELLINGS_OF_TRUE:
        return True
    return str2bool(text)


def get_args_parser():
    parser = ArgumentParser(description="Evaluate CCNet on Cityscapes, Pascal VOC, ADE20K or a folder of images",
                            allow_abbrev=False)
    data = parser.add_argument_group("data")
    add_dataset_argument(data)
    data.add_argument("--data-dir", type=str, default="cityscapes",
                      help="dataset root (Cityscapes: the folder holding leftImg8bit/ and gtFine/)")
    data.add_argument("--data-list", type=str, default=None,
                      help="list of 'image label' paths relative to --data-dir, images only with --test "
                           "(default: the dataset's val or test split; for cityscapes "
                           "./dataset/list/cityscapes/val.lst, or test.lst with --test)")
    data.add_argument("--ignore-label", type=label_value, default=255, help="label value left out of the metric")
    data.add_argument("--test", action="store_true",
                      help="the list is the unlabelled test split: predict and save, no metric")

    model = parser.add_argument_group("model")
    model.add_argument("--restore-from", type=str, default="./deeplab_resnet.ckpt",
                       help="checkpoint to evaluate; result.txt is written next to it")
    model.add_argument("--model", type=str, default="ccnet", help="network name: ccnet, pspnet or deeplabv3")
    model.add_argument("--num-classes", type=int, default=None,
                       help="number of classes the model predicts (default: read from the checkpoint)")
    model.add_argument("--recurrence", type=int, default=None,
                       help="criss-cross attention passes (default: the checkpoint's, a training state's "
                            "arguments or an mmsegmentation config; else 2 in mmsegmentation's layout (its "
                            "CCHead's), else 1, upstream's)")
    model.add_argument("--norm", choices=networks.NORMS, default=None,
                       help="layout: syncbn (upstream's), inplace-abn (the official CCNet's) or mmseg "
                            "(mmsegmentation's); default: told by the checkpoint's keys")
    add_align_corners_argument(model)

    inference = parser.add_argument_group("inference")
    inference.add_argument("--whole", type=whole_flag, nargs="?", const=True, default=False,
                           help="predict each image in one pass instead of by sliding window")
    add_inference_arguments(inference, "the dataset's crop size, 769,769 for cityscapes")
    inference.add_argument("--batch-size", type=int, default=4, help="images per forward pass (per process)")

    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--Output", type=str, default="./",
                         help="predictions go to <dirname of this path>/outputs/")
    outputs.add_argument("--save-pred", action=argparse.BooleanOptionalAction, default=True,
                         help="write the predicted PNGs")
    outputs.add_argument("--confusion-figure", type=str2bool, nargs="?", const=True, default=False,
                         help="also draw the row-normalized confusion matrix as confusion_matrix.png next to "
                              "result.txt")

    speed = parser.add_argument_group("speed and devices")
    speed.add_argument("--gpu", type=str, default=None,
                       help="CUDA device ids, e.g. 0 or 0,1 (default: cuda:0 when present, else the CPU)")
    speed.add_argument("--num-workers", type=int, default=8, help="data-loading processes")
    add_speed_arguments(speed)
    add_launcher_arguments(parser.add_argument_group("launchers"))
    return parser


def check_args(args):
    """Raise UserError for flag values that cannot work, before anything is loaded."""
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.num_workers < 0:
        raise UserError(f"--num-workers must be 0 or more, got {args.num_workers}")
    if args.test and not args.save_pred:
        raise UserError("--test only writes predictions; it cannot be combined with --no-save-pred")
    if args.test and args.confusion_figure:
        raise UserError("--test has no labels, so no confusion matrix: leave out --confusion-figure")
    if args.confusion_figure and importlib.util.find_spec("matplotlib") is None:
        raise UserError("--confusion-figure needs matplotlib: pip install matplotlib")
    if not os.path.isdir(args.data_dir):
        raise UserError(f"data directory not found: {args.data_dir}")


def build_loader(info, args, runtime):
    """DataLoader over this process's share of the dataset's split: images rank, rank + world_size, ..."""
    if args.test:
        dataset = info.test_set(args.data_list, mean=IMG_MEAN)
    else:
        dataset = info.val_set(args.data_list, mean=IMG_MEAN, ignore_label=args.ignore_label,
                               warn=runtime.is_main)
    return shard_loader(dataset, runtime, args.batch_size, args.num_workers)


def save_predictions(info, predictions, names, out_dir, label_ids):
    """Write each (H, W) train-id map as <name>.png in the dataset's colours, and in its label values if asked."""
    for prediction, name in zip(predictions, names):
        info.colorize(prediction).save(os.path.join(out_dir, f"{name}.png"))
        if label_ids:
            Image.fromarray(info.label_values[prediction]).save(os.path.join(out_dir, "label_ids", f"{name}.png"))


def percent(value):
    """'12.34' for 0.1234, 'null' for None."""
    return "null" if value is None else f"{100 * value:.2f}"


def report(confmat, names):
    """Print each class's IoU and accuracy, their means and the pixel accuracy (in %) as a table;
    null marks a class seen nowhere (IoU) or never labelled (accuracy)."""
    rows = [(name, percent(iou), percent(accuracy))
            for name, iou, accuracy in zip(names, confmat.iou(), confmat.class_accuracy())]
    rows += [("mean (mIoU, mAcc)", percent(confmat.mean_iou()), percent(confmat.mean_accuracy())),
             ("pixel accuracy", "", percent(confmat.pixel_accuracy()))]
    width = max(len(name) for name, _, _ in rows) + 2
    for name, iou, accuracy in [("class", "IoU", "Acc")] + rows:
        print(f"{name:<{width}}{iou:>7}{accuracy:>8}")


def write_results(confmat, names, folder, figure):
    """Write result.txt (JSON: meanIU, IU_array, meanAcc, Acc_array), confusion_matrix.csv (the counts,
    rows true and columns predicted classes) and, with figure, confusion_matrix.png into folder."""
    result = {"meanIU": confmat.mean_iou(), "IU_array": confmat.iou(),
              "meanAcc": confmat.mean_accuracy(), "Acc_array": confmat.class_accuracy()}
    with open(os.path.join(folder, "result.txt"), "w") as f:
        f.write(json.dumps(result))
    write_confusion_csv(confmat.matrix.cpu(), names, os.path.join(folder, "confusion_matrix.csv"))
    if figure:
        fractions = confmat.row_fractions().cpu().numpy()  # (k, k)
        save_confusion_figure(fractions, names, os.path.join(folder, "confusion_matrix.png"))


def dataset_of(args, settings, info=None):
    """The DatasetInfo to evaluate on: ``info`` (--dataset's), else the one the checkpoint tells (else
    cityscapes); --num-classes left unset is the model's, --input-size the dataset's."""
    if info is None:
        args.dataset = settings["dataset"] or "cityscapes"
        info = get_dataset(args.dataset, args.data_dir)
    args.num_classes = args.num_classes or settings["num_classes"]
    fill_defaults(args, info)
    return info


def main(args):
    check_args(args)
    runtime = setup(args.gpu)
    try:
        if runtime.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        # A dataset given by --dataset is read (its list, its files) before the checkpoint.
        info = get_dataset(args.dataset, args.data_dir) if args.dataset else None
        loader = build_loader(info, args, runtime) if info else None
        model, settings = build_from_checkpoint(args.restore_from, args.model, args.num_classes, args.recurrence,
                                                args.norm, align_corners=args.align_corners,
                                                defaults={"recurrence": 1})
        info = dataset_of(args, settings, info)
        if runtime.is_main:
            print(f"{args.restore_from}: {describe(settings)}")
        loader = loader or build_loader(info, args, runtime)
        model.to(runtime.device, memory_format=memory_format(args.channels_last))
        if len(runtime.gpu_ids) > 1:
            model = AutocastDataParallel(model, device_ids=runtime.gpu_ids)

        out_dir = os.path.join(os.path.dirname(args.Output), "outputs")
        if args.save_pred:
            os.makedirs(os.path.join(out_dir, "label_ids") if args.test else out_dir, exist_ok=True)

        settings = InferenceSettings(None if args.whole else args.input_size, tuple(args.scales), args.flip,
                                     args.rescale, args.amp, args.channels_last)
        confmat = None if args.test else ConfusionMatrix(args.num_classes, args.ignore_label, runtime.device)
        save = functools.partial(save_predictions, info, out_dir=out_dir, label_ids=args.test) if args.save_pred \
            else None
        start = time.perf_counter()
        evaluate(model, loader, settings, confmat, save, show_progress=runtime.is_main)
        seconds = time.perf_counter() - start
        if runtime.is_main:
            count = len(loader.dataset)
            share = f" (process 0 of {runtime.world_size})" if runtime.distributed else ""
            print(f"{count} images in {seconds:.1f} s, {count / seconds:.2f} img/s{share}")
        if confmat is None:
            return None
        confmat.all_reduce()
        if runtime.is_main:
            names = class_labels(info.class_names, confmat.num_classes)
            report(confmat, names)
            write_results(confmat, names, os.path.dirname(args.restore_from), args.confusion_figure)
        return confmat
    finally:
        teardown()


if __name__ == "__main__":
    exit_on_user_error(main)(get_args_parser().parse_args())
