"""Segment your own images and videos with a trained CCNet, and draw its criss-cross attention.

    python predict.py --restore-from snapshots/CS_scenes_60000.pth photo.jpg street/ drive.mp4
    python predict.py --restore-from CKPT photo.jpg --attention 300,600 --attention 500,100

Each INPUT is an image, a folder (searched with its subfolders for .png, .jpg, .jpeg, .bmp, .tif
and .tiff files, in sorted order) or a video (.mp4, .avi, .mov, .mkv, .webm; frames read with
OpenCV). For each image, in --output:
- <name>.png: the predicted train ids as a palette PNG, as evaluate.py writes them;
- <name>_overlay.jpg: the prediction's colours blended over the image (--alpha);
- <name>_attention.png with --attention Y,X: the input with each point marked, then the weights of
  the point's attention after each criss-cross pass as heat maps (networks/attention_maps.py).
For a video, <name>_overlay.mp4 holds the overlaid frames. <name> is the file's stem, below the
subfolder it was found in for a folder (street/a/x.png -> a/x); two inputs that would write the
same file stop the run before anything is written, and --output is not searched for inputs. A run writes and overwrites its own outputs only.

Prediction goes through utils.inference, as in evaluate.py: whole images by default, --input-size
sliding windows, --rescale, --scales, --flip, --amp, --channels-last. Model, classes, layout and depth
come from the checkpoint where it holds them (networks/from_checkpoint.py; an official CCNet or
mmsegmentation file included), from --model, --num-classes and --recurrence otherwise; the colours
from --dataset, else the dataset the checkpoint tells. An input that cannot be read is named in one line and skipped; the exit
status is then 1 once every other input is written.
"""
import os
import sys
import time

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from dataset.registry import add_dataset_argument, get_dataset
from dataset.datasets import IMG_MEAN, normalize, read_image
from networks.attention_maps import attention_maps, attention_modules, recorded_attention
from networks.from_checkpoint import add_checkpoint_arguments, build_from_checkpoint, describe
from utils.cli import ArgumentParser, point, unit_interval
from utils.errors import UserError, exit_on_user_error
from utils.inference import add_inference_arguments, aligns_corners, predict
from utils.palette import color_label, palette_image
from utils.runtime import add_speed_arguments, autocast, memory_format, parse_device
from utils.visualize import attention_figure, blend

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_OUTPUTS = (".png", "_overlay.jpg", "_attention.png")  # train ids, overlay, attention figure
VIDEO_OUTPUT = "_overlay.mp4"


class Unreadable(Exception):
    """An input file that cannot be decoded; it is skipped."""


def get_args_parser():
    parser = ArgumentParser(description="Segment images, folders and videos with a trained CCNet", allow_abbrev=False)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, video files")
    add_checkpoint_arguments(parser.add_argument_group("model"))
    data = parser.add_argument_group("classes and colours")
    add_dataset_argument(data)
    data.add_argument("--data-dir", default=None,
                      help="with --dataset folder: the dataset folder whose classes file names the colours "
                           "(default: none)")
    add_inference_arguments(parser.add_argument_group("inference"), "each image whole")
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--output", default="predictions", help="folder for the outputs (created if needed)")
    outputs.add_argument("--alpha", type=unit_interval, default=0.5, help="weight of the colours in the overlay")
    outputs.add_argument("--attention", type=point, action="append", default=[], metavar="Y,X",
                         help="draw the attention of this pixel (repeatable) in <name>_attention.png "
                              "(default: none)")
    speed = parser.add_argument_group("speed and devices")
    speed.add_argument("--device", type=str, default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    add_speed_arguments(speed)
    return parser


def folder_images(folder, skipped):
    """[(path, name)] of the images in folder and its subfolders but the folder ``skipped``, sorted;
    name is the path below folder without its extension."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(root, d)) != os.path.realpath(skipped))
        for file in sorted(files):
            if file.lower().endswith(IMAGE_EXTENSIONS):
                path = os.path.join(root, file)
                found.append((path, os.path.splitext(os.path.relpath(path, folder))[0]))
    return found


def outputs_of(kind, name):
    """The files, relative to --output, that an input of this kind and name writes."""
    return [name + VIDEO_OUTPUT] if kind == "video" else [name + suffix for suffix in IMAGE_OUTPUTS]


def collect_inputs(inputs, out_dir):
    """[(kind, path, name)] with kind 'image' or 'video', in the order given (out_dir is not searched,
    so a re-run does not read its own outputs); a missing input path, an empty folder or two inputs
    writing the same file is a UserError."""
    jobs = []
    for given in inputs:
        if os.path.isdir(given):
            found = folder_images(given, out_dir)
            if not found:
                raise UserError(f"{given}: no {'/'.join(IMAGE_EXTENSIONS)} files in this folder")
            jobs += [("image", path, name) for path, name in found]
        elif os.path.isfile(given):
            stem, extension = os.path.splitext(os.path.basename(given))
            jobs.append(("video" if extension.lower() in VIDEO_EXTENSIONS else "image", given, stem))
        else:
            raise UserError(f"input not found: {given}")
    writer = {}
    for kind, path, name in jobs:
        for output in outputs_of(kind, name):
            if output in writer:
                raise UserError(f"{writer[output]} and {path} would both write {os.path.join(out_dir, output)}; "
                                "predict them in separate runs with different --output folders")
            writer[output] = path
    return jobs


def frame_count(path):
    """Frames a video says it holds (0 when it cannot be opened)."""
    capture = cv2.VideoCapture(path)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    return max(count, 0)


class Predictor:
    """The network on its device with the prediction flags: BGR images in, train ids and pictures out."""

    def __init__(self, network, args, device, palette):
        self.network, self.args, self.device, self.palette = network, args, device, palette

    def tensor(self, image):
        """uint8 (H, W, 3) BGR -> float32 (1, 3, H, W) minus the training mean, on the device."""
        return torch.from_numpy(normalize(image, np.asarray(IMG_MEAN))).unsqueeze(0).to(
            self.device, memory_format=memory_format(self.args.channels_last))

    @torch.no_grad()
    def train_ids(self, image):
        """uint8 (H, W) predicted train ids of a BGR image."""
        with autocast(self.device, self.args.amp):
            probs = predict(self.network, self.tensor(image), self.args.input_size, self.args.scales, self.args.flip,
                            self.args.rescale)
        return probs.argmax(1)[0].to(torch.uint8).cpu().numpy()

    def overlay(self, image, train_ids):
        """uint8 (H, W, 3) RGB: the image (BGR) with the prediction's colours blended in."""
        return blend(np.ascontiguousarray(image[..., ::-1]), color_label(train_ids, self.palette), self.args.alpha)

    @torch.no_grad()
    def attention(self, image, points):
        """(R, h, w) attention maps of each point (y, x) of a BGR image, from one whole-image
        forward pass at scale 1; a point's feature position is the nearest one under the network's
        upsampling of its logits (feature_index)."""
        with autocast(self.device, self.args.amp), recorded_attention(self.network) as passes:
            self.network(self.tensor(image))
        (height, width), (h, w) = image.shape[:2], passes[0][0].shape[1:3]
        corners = aligns_corners(self.network)
        return [attention_maps(passes, feature_index(y, height, h, corners), feature_index(x, width, w, corners))[:, 0]
                for y, x in points]


def feature_index(pixel, size, feature_size, align_corners):
    """The feature row (or column) nearest to image row ``pixel`` of ``size`` under a bilinear resize of
    ``feature_size`` to ``size``: corners aligned, or half-pixel centres."""
    if align_corners:
        return round(pixel * (feature_size - 1) / (size - 1)) if size > 1 else 0
    return min(max(round((pixel + 0.5) * feature_size / size - 0.5), 0), feature_size - 1)


def output_path(out_dir, name, suffix):
    """out_dir/<name><suffix>, its folder created."""
    path = os.path.join(out_dir, name + suffix)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def predict_image(predictor, path, name, out_dir):
    """Write <name>.png, <name>_overlay.jpg and, for --attention points inside the image, <name>_attention.png."""
    try:
        image = read_image(path)  # (H, W, 3) BGR; grayscale and alpha converted by OpenCV
    except UserError:
        raise Unreadable("not an image OpenCV can read") from None
    train_ids = predictor.train_ids(image)
    ids_file, overlay_file, attention_file = (output_path(out_dir, name, suffix) for suffix in IMAGE_OUTPUTS)
    palette_image(train_ids, predictor.palette).save(ids_file)
    Image.fromarray(predictor.overlay(image, train_ids)).save(overlay_file, quality=90)
    height, width = image.shape[:2]
    points = [(y, x) for y, x in predictor.args.attention if y < height and x < width]
    for y, x in sorted(set(predictor.args.attention) - set(points)):
        tqdm.write(f"{path}: point {y},{x} lies outside the {height}x{width} image; not drawn", file=sys.stderr)
    if points:
        figure = attention_figure(np.ascontiguousarray(image[..., ::-1]), points, predictor.attention(image, points))
        Image.fromarray(figure).save(attention_file)


def predict_video(predictor, path, name, out_dir, bar):
    """Write <name>_overlay.mp4: every frame with its prediction blended in; returns the frame count."""
    capture = cv2.VideoCapture(path)
    writer = None
    frames = 0
    try:
        if not capture.isOpened():
            raise Unreadable("not a video OpenCV can open")
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        while True:
            ok, frame = capture.read()  # (H, W, 3) BGR
            if not ok:
                break
            if writer is None:
                writer = cv2.VideoWriter(output_path(out_dir, name, VIDEO_OUTPUT), cv2.VideoWriter_fourcc(*"mp4v"),
                                         fps, (frame.shape[1], frame.shape[0]))
            writer.write(np.ascontiguousarray(predictor.overlay(frame, predictor.train_ids(frame))[..., ::-1]))
            frames += 1
            bar.update(1)
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if frames == 0:
        raise Unreadable("no frame could be read")
    return frames


def main(args):
    """Predict every input; returns the exit status: 0, or 1 when an input was skipped."""
    jobs = collect_inputs(args.inputs, args.output)
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UserError(f"--output {args.output} is a file, not a folder")
    device = parse_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    network, settings = build_from_checkpoint(args.restore_from, args.model, args.num_classes, args.recurrence,
                                              align_corners=args.align_corners)
    palette = get_dataset(args.dataset or settings["dataset"] or "cityscapes", args.data_dir).palette
    if args.attention and not attention_modules(network):
        raise UserError(f"--attention needs a network with criss-cross attention, not {settings['model']}")
    network.to(device, memory_format=memory_format(args.channels_last))
    print(f"{args.restore_from}: {describe(settings)}, on {device}")
    predictor = Predictor(network, args, device, palette)
    total = sum(1 if kind == "image" else frame_count(path) for kind, path, _ in jobs)
    bar = tqdm(total=total, unit="img", disable=not sys.stderr.isatty())
    skipped, done = [], 0
    start = time.perf_counter()
    for kind, path, name in jobs:
        try:
            if kind == "video":
                done += predict_video(predictor, path, name, args.output, bar)
            else:
                predict_image(predictor, path, name, args.output)
                done += 1
                bar.update(1)
        except Unreadable as e:
            tqdm.write(f"skipped {path}: {e}", file=sys.stderr)
            skipped.append(path)
    bar.close()
    seconds = time.perf_counter() - start
    print(f"{done} images in {seconds:.1f} s, {done / seconds:.2f} img/s; outputs in {args.output}")
    if skipped:
        print(f"{len(skipped)} of {len(jobs)} inputs skipped", file=sys.stderr)
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main)(get_args_parser().parse_args()))
