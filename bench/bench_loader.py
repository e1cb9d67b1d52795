"""Loader throughput: CSDataSet.__getitem__ at Cityscapes size against upstream's code path.

    python bench/bench_loader.py --iters 20

Writes a few 1024x2048 synthetic Cityscapes images to a temporary folder and times 769x769
training samples (random scale, crop, mirror). The baseline is written here: it maps label ids
with one Python pass over the image per table entry, and scales, converts and pads the whole image
before cropping, as upstream's loader (the official CCNet's) does. Both draw scales from the same set. Rows:
"full" includes PNG decoding; "in memory" times the id mapping and augmentation of decoded arrays.
"""
import os
import random
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset.cityscapes_labels import LABELS  # noqa: E402
from dataset.datasets import IMG_MEAN, SCALES, CSDataSet, read_image, to_train_ids  # noqa: E402
from dataset.synthetic import make_synthetic_cityscapes  # noqa: E402
from utils.cli import ArgumentParser  # noqa: E402

ID_TO_TRAINID_DICT = {label.id: label.train_id for label in LABELS}


def baseline_transform(image, label_ids, crop, mean, ignore=255):
    """Upstream's per-sample loader work on decoded arrays: per-id loop, whole-image scale/pad, crop."""
    label = label_ids.copy()
    for label_id, train_id in ID_TO_TRAINID_DICT.items():
        label[label_ids == label_id] = train_id
    f = random.choice(SCALES)
    image = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, None, fx=f, fy=f, interpolation=cv2.INTER_NEAREST)
    image = np.asarray(image, np.float32)
    image -= mean
    pad_h, pad_w = max(crop[0] - label.shape[0], 0), max(crop[1] - label.shape[1], 0)
    if pad_h > 0 or pad_w > 0:
        image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(0.0, 0.0, 0.0))
        label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(ignore,))
    y = random.randint(0, label.shape[0] - crop[0])
    x = random.randint(0, label.shape[1] - crop[1])
    image = np.asarray(image[y:y + crop[0], x:x + crop[1]], np.float32).transpose(2, 0, 1)
    label = np.asarray(label[y:y + crop[0], x:x + crop[1]], np.float32)
    if random.random() < 0.5:
        image, label = image[:, :, ::-1], label[:, ::-1]
    return image.copy(), label.copy()


def baseline_item(files, index, crop, mean):
    image_file, label_file = files[index]
    image = cv2.imread(image_file, cv2.IMREAD_COLOR)
    label = cv2.imread(label_file, cv2.IMREAD_GRAYSCALE)
    return baseline_transform(image, label, crop, mean)


def images_per_second(fn, count, iters):
    random.seed(0)
    fn(0)  # warm-up
    start = time.perf_counter()
    for i in range(iters):
        fn(i % count)
    return iters / (time.perf_counter() - start)


def main(args):
    cv2.setNumThreads(args.cv2_threads)
    crop = (args.crop, args.crop)
    with tempfile.TemporaryDirectory() as root:
        lists = make_synthetic_cityscapes(root, num_train=args.num_images, num_val=0, num_test=0,
                                          height=1024, width=2048, seed=0)
        dataset = CSDataSet(root, lists["train"], crop_size=crop, mean=IMG_MEAN, scale=True, mirror=True)
        decoded = [(read_image(i), cv2.imread(l, cv2.IMREAD_GRAYSCALE)) for i, l in dataset.files]
        mean = np.asarray(IMG_MEAN)
        rows = [
            ("full __getitem__", lambda i: baseline_item(dataset.files, i, crop, mean), lambda i: dataset[i]),
            ("in memory", lambda i: baseline_transform(*decoded[i], crop, mean),
             lambda i: dataset.transform(decoded[i][0], to_train_ids(decoded[i][1]))),
        ]
        print(f"1024x2048 -> {crop[0]}x{crop[1]} crops, random scale and mirror, cv2 threads {args.cv2_threads}, "
              f"{args.iters} samples")
        print(f"{'':18s} {'upstream recipe img/s':>21s} {'CSDataSet img/s':>16s} {'speed-up':>9s}")
        for name, baseline, ours in rows:
            base_ips = images_per_second(baseline, len(decoded), args.iters)
            our_ips = images_per_second(ours, len(decoded), args.iters)
            print(f"{name:18s} {base_ips:21.2f} {our_ips:16.2f} {our_ips / base_ips:8.1f}x")


def get_args_parser():
    parser = ArgumentParser(description="Images/s of CSDataSet.__getitem__ at Cityscapes size.")
    sizes = parser.add_argument_group("sizes")
    sizes.add_argument("--num-images", type=int, default=4, help="synthetic 1024x2048 images to cycle through")
    sizes.add_argument("--crop", type=int, default=769, help="square crop size of the training recipe")
    measurement = parser.add_argument_group("measurement")
    measurement.add_argument("--iters", type=int, default=20, help="samples timed per row and loader")
    measurement.add_argument("--cv2-threads", type=int, default=1, help="OpenCV threads (1 = one DataLoader worker)")
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
