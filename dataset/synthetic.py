"""A small synthetic dataset of street-like scenes in the layout of each dataset, for demos and tests.

    python -m dataset.synthetic --out data/synthetic_cityscapes
    python -m dataset.synthetic --out data/synthetic_voc --dataset voc      # also ade20k, folder

Every image holds all 19 Cityscapes classes in a randomized layout (sky, buildings, road,
sidewalk, terrain, poles with lights and signs, vehicles, people); each class is painted in its
own saturated colour with mild noise, so a network can recognize it locally, and an ego-vehicle
strip in some images exercises the ignore label. Layouts (label values in brackets):

- cityscapes: ``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png``, the matching
  ``gtFine/<split>/<city>/..._gtFine_labelIds.png`` (official label ids, not train ids) and
  ``list/{train,val,test}.lst``;
- voc: ``JPEGImages/<id>.jpg``, ``SegmentationClassAug/<id>.png`` and ids in
  ``ImageSets/Segmentation/{train,val,test}.txt`` (the vehicles and people as their VOC classes,
  everything else background, the strip 255);
- ade20k: ``images/{training,validation,testing}/*.jpg`` and ``annotations/{training,validation}/*.png``
  (each class as its nearest ADE20K class, the strip 0 = "other");
- folder: ``images/{train,val,test}/*.png``, ``labels/{train,val}/*.png`` and ``classes.txt`` listing the
  19 classes with their Cityscapes label ids, names and colours (the strip 255).
"""
import os

import cv2
import numpy as np

from dataset import ade20k, voc
from dataset.cityscapes_labels import CLASS_NAMES, NUM_CLASSES, PALETTE, TRAINID_TO_ID
from dataset.make_lists import IMAGE_SUFFIX, LABEL_SUFFIX, write_list
from utils.cli import ArgumentParser
from utils.errors import UserError, exit_on_user_error

__all__ = ["make_synthetic", "make_synthetic_cityscapes", "render_scene", "LAYOUTS"]

(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY,
 PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(NUM_CLASSES)
EGO_VEHICLE_ID = 1

# One RGB colour per train id, at least 127 apart in some channel from every other one.
COLORS = np.array([
    (128, 0, 128), (255, 0, 255), (128, 128, 0), (255, 128, 0), (0, 128, 0),
    (255, 255, 0), (255, 0, 0), (0, 255, 255), (0, 255, 0), (128, 255, 0),
    (128, 128, 255), (255, 0, 128), (0, 0, 255), (0, 0, 128), (128, 0, 0),
    (0, 128, 255), (0, 128, 128), (255, 128, 255), (128, 255, 255),
], dtype=np.int16)

SPLITS = (("train", "aachen"), ("val", "frankfurt"), ("test", "berlin"))


def _rect(label, cls, x0, y0, x1, y1):
    cv2.rectangle(label, (int(x0), int(y0)), (int(x1), int(y1)), int(cls), thickness=-1)


def _ellipse(label, cls, cx, cy, rx, ry):
    cv2.ellipse(label, (int(cx), int(cy)), (max(int(rx), 1), max(int(ry), 1)), 0, 0, 360, int(cls), thickness=-1)


def _poly(label, cls, points):
    cv2.fillPoly(label, [np.array(points, dtype=np.int32)], int(cls))


def _background(label, rng, h, w, horizon):
    """Sky, a skyline of buildings with a wall, fence and trees, road, sidewalk and terrain."""
    x = 0.0
    while x < w:
        block = rng.uniform(0.1, 0.25) * w
        _rect(label, BUILDING, x, rng.uniform(0.1, 0.3) * h, x + block, horizon)
        x += block
    for _ in range(rng.integers(1, 3)):
        _ellipse(label, VEGETATION, rng.uniform(0, w), rng.uniform(0.25, 0.4) * h,
                 rng.uniform(0.06, 0.12) * w, rng.uniform(0.08, 0.14) * h)
    wall_x, fence_x = rng.uniform(0.0, 0.3) * w, rng.uniform(0.5, 0.8) * w
    _rect(label, WALL, wall_x, horizon - rng.uniform(0.14, 0.2) * h, wall_x + rng.uniform(0.15, 0.22) * w, horizon)
    _rect(label, FENCE, fence_x, horizon - rng.uniform(0.12, 0.16) * h, fence_x + rng.uniform(0.15, 0.22) * w, horizon)
    label[int(horizon):] = ROAD
    _poly(label, SIDEWALK, [(0, horizon), (rng.uniform(0.15, 0.3) * w, horizon), (0, rng.uniform(0.75, 0.95) * h)])
    _poly(label, TERRAIN, [(w, horizon), (w - rng.uniform(0.15, 0.3) * w, horizon), (w, rng.uniform(0.7, 0.9) * h)])


def _poles(label, rng, h, w, horizon):
    """Two poles, one carrying a traffic light and one a traffic sign."""
    pole_w = max(2.0, 0.014 * w)
    for cls, lo, hi in ((LIGHT, 0.3, 0.45), (SIGN, 0.55, 0.7)):
        x = rng.uniform(lo, hi) * w
        top = rng.uniform(0.12, 0.22) * h
        _rect(label, POLE, x, top, x + pole_w, horizon + 0.05 * h)
        box_w, box_h = rng.uniform(0.03, 0.05) * w, rng.uniform(0.07, 0.1) * h
        _rect(label, cls, x - box_w / 2, top, x + pole_w + box_w / 2, top + box_h)


def _vehicles(label, rng, h, w, horizon):
    """Trains, buses and trucks far down the road; cars, people, a rider and bikes nearer."""
    far = horizon + rng.uniform(0.08, 0.14) * h
    for cls, lo, hi in zip(rng.permutation([TRAIN, BUS, TRUCK]), (0.05, 0.35, 0.65), (0.12, 0.42, 0.72)):
        x, bw, bh = rng.uniform(lo, hi) * w, rng.uniform(0.18, 0.24) * w, rng.uniform(0.16, 0.22) * h
        _rect(label, cls, x, far - bh, x + bw, far)
        if cls == TRUCK:
            _rect(label, cls, x + bw, far - 0.6 * bh, x + 1.25 * bw, far)
    near = horizon + rng.uniform(0.3, 0.4) * h
    slots = rng.permutation(4)
    for slot, kind in zip(slots, ("car", "person", "rider", "bicycle")):
        x = (0.08 + 0.22 * slot + rng.uniform(0.0, 0.06)) * w
        if kind == "car":
            cw, ch = rng.uniform(0.14, 0.18) * w, rng.uniform(0.12, 0.16) * h
            _rect(label, CAR, x, near - ch, x + cw, near)
            _ellipse(label, CAR, x + cw / 2, near - ch, cw * 0.35, ch * 0.4)
        elif kind == "person":
            _ellipse(label, PERSON, x, near - 0.12 * h, rng.uniform(0.02, 0.03) * w, 0.12 * h)
            _ellipse(label, PERSON, x + 0.05 * w, near - 0.1 * h, rng.uniform(0.02, 0.03) * w, 0.1 * h)
        elif kind == "rider":
            _ellipse(label, MOTORCYCLE, x, near - 0.05 * h, rng.uniform(0.04, 0.05) * w, 0.05 * h)
            _ellipse(label, RIDER, x, near - 0.15 * h, rng.uniform(0.02, 0.03) * w, 0.08 * h)
        else:
            _ellipse(label, BICYCLE, x, near - 0.05 * h, rng.uniform(0.04, 0.05) * w, 0.05 * h)


def render_scene(rng, height, width):
    """One scene -> (RGB uint8 (H, W, 3) image, uint8 (H, W) official label ids)."""
    for _ in range(10):
        train_ids = np.full((height, width), SKY, dtype=np.uint8)
        horizon = rng.uniform(0.45, 0.55) * height
        _background(train_ids, rng, height, width, horizon)
        _poles(train_ids, rng, height, width, horizon)
        _vehicles(train_ids, rng, height, width, horizon)
        if rng.random() < 0.5:
            train_ids = train_ids[:, ::-1]
        if len(np.unique(train_ids)) == NUM_CLASSES:
            break
    else:
        raise UserError(f"{height}x{width} is too small to hold all {NUM_CLASSES} classes")
    offsets = rng.integers(-20, 21, size=(NUM_CLASSES, 3))  # per-image shade of each class
    image = COLORS[train_ids] + offsets[train_ids] + rng.integers(-12, 13, size=(height, width, 3), dtype=np.int16)
    label_ids = TRAINID_TO_ID[train_ids]
    if rng.random() < 0.5:
        ego = int(height * (1 - rng.uniform(0.04, 0.08)))
        label_ids[ego:] = EGO_VEHICLE_ID
        image[ego:] = rng.integers(0, 24, size=image[ego:].shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8), label_ids


def _value_table(values, ignore_value):
    """(256,) uint8 Cityscapes label id -> the layout's label value: train id t -> values[t], the rest ignore_value."""
    table = np.full(256, ignore_value, dtype=np.uint8)
    table[TRAINID_TO_ID] = values
    return table


class Layout:
    """Where a layout puts sample `index` of a split (paths relative to the root) and its label values."""

    def __init__(self, image, label, values, ignore_value, lists, test_labels=False):
        self.image, self.label = image, label  # (split, index) -> relative path
        self.table = _value_table(values, ignore_value)
        self.lists = lists  # (root, split, [(image, label)]) -> the file or folder naming the split
        self.test_labels = test_labels  # whether the test split has label files (not listed)


def _cityscapes_path(split, index, folder, suffix):
    city = dict(SPLITS)[split]
    return f"{folder}/{split}/{city}/{city}_{index:06d}_000019{suffix}"


def _cityscapes_lists(root, split, _):
    path = os.path.join(root, "list", f"{split}.lst")
    write_list(root, [split], path)
    return path


def _voc_lists(root, split, samples):
    path = os.path.join(root, voc.SPLIT_LIST.format(split))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(os.path.basename(image)[:-len(".jpg")] + "\n" for image, _ in samples))
    return path


def _folder_lists(root, split, samples):
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("# value red green blue name\n")
        for value, (r, g, b), name in zip(TRAINID_TO_ID, PALETTE, CLASS_NAMES):
            f.write(f"{value} {r} {g} {b} {name}\n")
    return os.path.dirname(os.path.join(root, samples[0][0]))


# The synthetic classes (Cityscapes train ids) in VOC and ADE20K label values.
VOC_VALUES = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 7, 7, 6, 19, 14, 2]
ADE20K_VALUES = [7, 12, 2, 1, 33, 94, 137, 44, 5, 10, 3, 13, 13, 21, 84, 81, 81, 117, 128]

LAYOUTS = {
    "cityscapes": Layout(lambda split, i: _cityscapes_path(split, i, "leftImg8bit", IMAGE_SUFFIX),
                         lambda split, i: _cityscapes_path(split, i, "gtFine", LABEL_SUFFIX),
                         TRAINID_TO_ID, EGO_VEHICLE_ID, _cityscapes_lists, test_labels=True),
    "voc": Layout(lambda split, i: voc.ID_PATHS[0].format(f"{split}_{i:06d}"),
                  lambda split, i: voc.ID_PATHS[1].format(f"{split}_{i:06d}"), VOC_VALUES, 255, _voc_lists),
    "ade20k": Layout(lambda split, i: f"images/{ade20k.FOLDERS[split]}/ADE_{split}_{i:08d}.jpg",
                     lambda split, i: f"annotations/{ade20k.FOLDERS[split]}/ADE_{split}_{i:08d}.png",
                     ADE20K_VALUES, 0,
                     lambda root, split, _: os.path.join(root, "images", ade20k.FOLDERS[split])),
    "folder": Layout(lambda split, i: f"images/{split}/scene_{i:04d}.png",
                     lambda split, i: f"labels/{split}/scene_{i:04d}.png", TRAINID_TO_ID, 255, _folder_lists),
}


def make_synthetic(root, dataset="cityscapes", num_train=30, num_val=10, num_test=5, height=256, width=512, seed=0):
    """Write the dataset in the layout of `dataset` under root; returns {split: what names it} for the
    non-empty splits: the list file (cityscapes, voc) or the image folder (ade20k, folder)."""
    if height < 32 or width < 64:
        raise UserError(f"synthetic images must be at least 32x64 (height x width), got {height}x{width}")
    if dataset not in LAYOUTS:
        raise UserError(f"unknown dataset {dataset!r}: choose from {', '.join(LAYOUTS)}")
    layout = LAYOUTS[dataset]
    rng = np.random.default_rng(seed)
    png = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    named = {}
    for (split, _), count in zip(SPLITS, (num_train, num_val, num_test)):
        if count <= 0:
            continue
        labelled = split != "test" or layout.test_labels
        samples = [(layout.image(split, index), layout.label(split, index) if labelled else None)
                   for index in range(count)]
        for image_path, label_path in samples:
            image, label_ids = render_scene(rng, height, width)
            for path in filter(None, (image_path, label_path)):
                os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
            cv2.imwrite(os.path.join(root, image_path), image[:, :, ::-1], png if image_path.endswith(".png") else [])
            if label_path is not None:
                cv2.imwrite(os.path.join(root, label_path), layout.table[label_ids], png)
        named[split] = layout.lists(root, split, samples)
    return named


def make_synthetic_cityscapes(root, num_train=30, num_val=10, num_test=5, height=256, width=512, seed=0):
    """Write a synthetic Cityscapes under root; returns {split: list file} for the non-empty splits."""
    return make_synthetic(root, "cityscapes", num_train, num_val, num_test, height, width, seed)


def get_args_parser():
    parser = ArgumentParser(description="Write a small synthetic dataset in the official layout of a dataset.")
    output = parser.add_argument_group("output")
    output.add_argument("--out", required=True, help="folder to write (created if missing)")
    output.add_argument("--dataset", default="cityscapes", choices=tuple(LAYOUTS), help="layout to write")
    content = parser.add_argument_group("content")
    content.add_argument("--num-train", type=int, default=30, help="training images")
    content.add_argument("--num-val", type=int, default=10, help="validation images")
    content.add_argument("--num-test", type=int, default=5, help="test images (no labels)")
    content.add_argument("--height", type=int, default=256, help="image height")
    content.add_argument("--width", type=int, default=512, help="image width")
    content.add_argument("--seed", type=int, default=0, help="random seed of the scenes")
    return parser


@exit_on_user_error
def main(args):
    named = make_synthetic(args.out, args.dataset, args.num_train, args.num_val, args.num_test,
                           args.height, args.width, args.seed)
    print(f"wrote a synthetic {args.dataset} dataset to {args.out}; splits: "
          + ", ".join(f"{split} {path}" for split, path in named.items()))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
