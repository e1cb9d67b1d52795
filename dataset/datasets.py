"""Segmentation datasets as read by CCNet's train.py and evaluate.py, and the Cityscapes ones of upstream.

A sample is an image file and a label file (none for a test image). Images are read as BGR;
labels hold one raw label value a pixel (8-bit grayscale or palette PNG), mapped to train ids
(255 = ignore) through the dataset's 256-entry lookup table (Cityscapes: official label ids to
the 19 train ids).

A list file holds one sample a line: ``image_path label_path`` (tab or spaces) relative to the
data root (test lists hold the image path only); a leading ``/`` is relative to the root too, as
in upstream's VOC lists, and with ``id_paths`` a line may hold a bare id instead.

Training augmentation: random scale 0.7 to 2.0 in steps of 0.1 (the official CCNet loader's
draw reaches 2.1), padding to the crop size (image with 0 after mean subtraction, label with ignore), a random
crop and a random horizontal mirror. Random draws use Python's ``random``; train.py seeds it for
each sample (dataset.seeded), so that a sample's augmentation does not depend on the loader worker.
"""
import math
import os
import random

import cv2
import numpy as np
from PIL import Image
from torch.utils import data

from dataset.cityscapes_labels import ID_TO_TRAINID, IGNORE_LABEL
from utils.errors import UserError
from utils.image_mean import IMG_MEAN

__all__ = ["IMG_MEAN", "read_list", "read_image", "read_label", "to_train_ids", "normalize", "SegmentationDataSet",
           "ImageSet", "CSDataSet", "CSDataValSet", "CSDataTestSet"]

SCALES = tuple(0.7 + step / 10.0 for step in range(14))


def _line_paths(row, with_labels, id_paths):
    """The relative paths a list line names: its own, or those of a bare id (no '/' and no '.')."""
    if id_paths is not None and len(row) == 1 and "/" not in row[0] and "." not in row[0]:
        return [template.format(row[0]) for template in id_paths[:2 if with_labels else 1]]
    if len(row) == 2 or (not with_labels and len(row) == 1):
        return row[:2 if with_labels else 1]
    return None


def read_list(root, list_path, with_labels=True, id_paths=None):
    """Parse a list file -> [(image_file, label_file or None)], checking that every file exists.

    id_paths: (image template, label template) such as ("JPEGImages/{}.jpg", "SegmentationClassAug/{}.png")
    for lines that hold an id only.
    """
    if not os.path.isfile(list_path):
        raise UserError(f"list file not found: {list_path}")
    with open(list_path) as f:
        rows = [(number, line.split()) for number, line in enumerate(f, start=1) if line.strip()]
    if not rows:
        raise UserError(f"list file {list_path} names no images")
    samples = []
    for number, row in rows:
        paths = _line_paths(row, with_labels, id_paths)
        if paths is None:
            expected = "an image path and a label path" if with_labels else "an image path"
            raise UserError(f"{list_path} line {number}: expected {expected}, got {' '.join(row)!r}")
        files = [os.path.join(root, path.lstrip("/")) for path in paths]
        for path in files:
            if not os.path.isfile(path):
                raise UserError(f"{list_path} line {number}: file not found: {path}")
        samples.append((files[0], files[1] if with_labels else None))
    return samples


def read_image(path):
    """BGR uint8 (H, W, 3) image from disk; an unreadable file is a UserError naming it."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"cannot read image {path} (corrupt or not an image)")
    return image


def read_label(path):
    """uint8 (H, W) label values of an 8-bit grayscale or palette image (a palette image's indices).

    The header tells the mode: a palette image is decoded once by PIL, which keeps its indices
    (OpenCV would expand them to colours), any other by OpenCV.
    """
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode == "P":
                return np.asarray(image)
    except OSError:
        raise UserError(f"cannot read label {path} (corrupt or not an image)") from None
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if label is None:
        raise UserError(f"cannot read label {path} (corrupt or not an image)")
    if label.ndim == 3:
        raise UserError(f"label {path} is a {mode} image; labels hold one value a pixel "
                        "(8-bit grayscale or palette PNG)")
    if label.dtype != np.uint8:
        raise UserError(f"label {path} has {label.dtype} values; labels are 8-bit (0..255)")
    return label


def read_train_ids(path, shape, label_map=ID_TO_TRAINID):
    """uint8 (H, W) train ids of a label image, checked to have the image's (H, W)."""
    label = read_label(path)
    if label.shape != shape:
        raise UserError(f"label {path} is {label.shape[1]}x{label.shape[0]} but its image is "
                        f"{shape[1]}x{shape[0]} (width x height)")
    return to_train_ids(label, label_map)


def to_train_ids(label_ids, label_map=ID_TO_TRAINID):
    """uint8 (H, W) raw label values -> uint8 (H, W) train ids through a (256,) lookup (255 = ignore).

    The default table maps official Cityscapes label ids.
    """
    return cv2.LUT(label_ids, label_map)


def normalize(image, mean, out=None):
    """uint8 (H, W, 3) BGR -> float32 (3, H, W) minus the BGR mean, written into out when given."""
    if out is None:
        out = np.empty((3,) + image.shape[:2], dtype=np.float32)
    # Subtracting in float64 and rounding once matches converting to float32 first and then subtracting.
    np.subtract(image.transpose(2, 0, 1), mean[:, None, None], out=out, casting="unsafe")
    return out


class SegmentationDataSet(data.Dataset):
    """Training samples: (image, label, size, name).

    samples: [(image file, label file)]; label_map: (256,) uint8 raw label value -> train id.
    image: float32 (3, crop_h, crop_w) BGR minus ``mean``; label: float32 (crop_h, crop_w) train ids
    (255, or ignore_label when given, = ignore); size: the original image shape (H, W, 3); name: the
    label file's stem. With ``crop_size=None`` the whole image is returned, unpadded and uncropped.
    With ``max_iters`` the list is repeated to hold at least max_iters samples.
    """

    def __init__(self, samples, label_map=ID_TO_TRAINID, max_iters=None, crop_size=(321, 321),
                 mean=(128, 128, 128), scale=True, mirror=True, ignore_label=IGNORE_LABEL):
        self.files = list(samples)
        if max_iters is not None:
            self.files = self.files * math.ceil(max_iters / len(self.files))
        self.label_map = label_map
        self.crop_size = None if crop_size is None else tuple(crop_size)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = scale
        self.mirror = mirror
        self.ignore_label = ignore_label

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        image_file, label_file = self.files[index]
        image = read_image(image_file)
        label = read_train_ids(label_file, image.shape[:2], self.label_map)
        if self.ignore_label != IGNORE_LABEL:
            label = np.where(label == IGNORE_LABEL, self.ignore_label, label)
        name = os.path.splitext(os.path.basename(label_file))[0]
        image_out, label_out = self.transform(image, label)
        return image_out, label_out, np.array(image.shape), name

    def transform(self, image, label):
        """uint8 BGR (H, W, 3) and train ids (H, W) -> float32 (3, h, w) and float32 (h, w)."""
        if self.scale:
            f = random.choice(SCALES)
            image = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(label, None, fx=f, fy=f, interpolation=cv2.INTER_NEAREST)
        if self.crop_size is None:
            image_out, label_out = normalize(image, self.mean), label.astype(np.float32)
        else:
            image_out, label_out = self._pad_crop(image, label)
        if self.mirror and random.random() < 0.5:
            image_out, label_out = image_out[:, :, ::-1], label_out[:, ::-1]
        return np.ascontiguousarray(image_out), np.ascontiguousarray(label_out)

    def _pad_crop(self, image, label):
        """A random crop_size window of the image padded at the bottom/right to at least crop_size.

        Only the window is converted to float: padding is 0 in the normalized image and
        ignore in the label, so the padded full-size arrays are never built.
        """
        crop_h, crop_w = self.crop_size
        h, w = label.shape
        y = random.randint(0, max(h, crop_h) - crop_h)
        x = random.randint(0, max(w, crop_w) - crop_w)
        win_h, win_w = min(crop_h, h - y), min(crop_w, w - x)
        image_out = np.zeros((3, crop_h, crop_w), dtype=np.float32)
        label_out = np.full((crop_h, crop_w), self.ignore_label, dtype=np.float32)
        normalize(image[y:y + win_h, x:x + win_w], self.mean, out=image_out[:, :win_h, :win_w])
        label_out[:win_h, :win_w] = label[y:y + win_h, x:x + win_w]
        return image_out, label_out


class ImageSet(data.Dataset):
    """Unlabelled images: (image float32 (3, H, W) BGR minus mean, size (H, W, 3), name)."""

    def __init__(self, image_files, mean=(128, 128, 128)):
        self.files = list(image_files)
        self.mean = np.asarray(mean, dtype=np.float64)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        image = read_image(self.files[index])
        name = os.path.splitext(os.path.basename(self.files[index]))[0]
        return normalize(image, self.mean), np.array(image.shape), name


class CSDataSet(SegmentationDataSet):
    """Cityscapes training samples of a list file (official label ids): see SegmentationDataSet."""

    def __init__(self, root, list_path, max_iters=None, crop_size=(321, 321), mean=(128, 128, 128),
                 scale=True, mirror=True, ignore_label=IGNORE_LABEL):
        super().__init__(read_list(root, list_path), ID_TO_TRAINID, max_iters, crop_size, mean, scale, mirror,
                         ignore_label)


class CSDataValSet(SegmentationDataSet):
    """Whole-image evaluation samples: (image (3, H, W), label (H, W), size, name), no augmentation."""

    def __init__(self, root, list_path, mean=(128, 128, 128), ignore_label=IGNORE_LABEL):
        super().__init__(read_list(root, list_path), ID_TO_TRAINID, crop_size=None, mean=mean, scale=False,
                         mirror=False, ignore_label=ignore_label)


class CSDataTestSet(ImageSet):
    """Cityscapes test images of a list file: see ImageSet."""

    def __init__(self, root, list_path, mean=(128, 128, 128)):
        super().__init__([image for image, _ in read_list(root, list_path, with_labels=False)], mean)
