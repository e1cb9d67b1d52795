"""Cityscapes datasets as read by CCNet's train.py and evaluate.py.

A list file holds one sample a line: ``image_path<TAB>label_path`` relative to the data root
(test lists hold the image path only). Images are read as BGR, labels are official label ids
mapped to the 19 train ids (255 = ignore) through one lookup table.

Training augmentation: random scale 0.7 to 2.0 in steps of 0.1 (the official CCNet loader's
draw reaches 2.1), padding to the crop size (image with 0 after mean subtraction, label with ignore), a random
crop and a random horizontal mirror. Random draws use Python's ``random``, which the
DataLoader seeds differently in every worker.
"""
import math
import os
import random

import cv2
import numpy as np
from torch.utils import data

from dataset.cityscapes_labels import ID_TO_TRAINID, IGNORE_LABEL
from utils.cli import UserError

# The Caffe ImageNet mean in BGR order, which CCNet's training and evaluation subtract.
IMG_MEAN = (104.00698793, 116.66876762, 122.67891434)

__all__ = ["IMG_MEAN", "read_list", "read_image", "to_train_ids", "normalize", "CSDataSet", "CSDataValSet",
           "CSDataTestSet"]

SCALES = tuple(0.7 + step / 10.0 for step in range(14))


def read_list(root, list_path, with_labels=True):
    """Parse a list file -> [(image_file, label_file or None)], checking that every file exists."""
    if not os.path.isfile(list_path):
        raise UserError(f"list file not found: {list_path}")
    with open(list_path) as f:
        rows = [(number, line.split()) for number, line in enumerate(f, start=1) if line.strip()]
    if not rows:
        raise UserError(f"list file {list_path} names no images")
    samples = []
    for number, row in rows:
        if len(row) != 2 and (with_labels or len(row) != 1):
            expected = "an image path and a label path" if with_labels else "an image path"
            raise UserError(f"{list_path} line {number}: expected {expected}, got {' '.join(row)!r}")
        files = [os.path.join(root, path) for path in row[:2 if with_labels else 1]]
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


def read_train_ids(path, shape):
    """uint8 (H, W) train ids of a label-id image, checked to have the image's (H, W)."""
    label = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if label is None:
        raise UserError(f"cannot read label {path} (corrupt or not an image)")
    if label.shape != shape:
        raise UserError(f"label {path} is {label.shape[1]}x{label.shape[0]} but its image is "
                        f"{shape[1]}x{shape[0]} (width x height)")
    return to_train_ids(label)


def to_train_ids(label_ids):
    """uint8 (H, W) official label ids -> uint8 (H, W) train ids through the table's lookup (255 = ignore)."""
    return cv2.LUT(label_ids, ID_TO_TRAINID)


def normalize(image, mean, out=None):
    """uint8 (H, W, 3) BGR -> float32 (3, H, W) minus the BGR mean, written into out when given."""
    if out is None:
        out = np.empty((3,) + image.shape[:2], dtype=np.float32)
    # Subtracting in float64 and rounding once matches converting to float32 first and then subtracting.
    np.subtract(image.transpose(2, 0, 1), mean[:, None, None], out=out, casting="unsafe")
    return out


class CSDataSet(data.Dataset):
    """Cityscapes training samples: (image, label, size, name).

    image: float32 (3, crop_h, crop_w) BGR minus ``mean``; label: float32 (crop_h, crop_w) train ids
    (255 = ignore); size: the original image shape (H, W, 3); name: the label file's stem.
    With ``crop_size=None`` the whole image is returned, unpadded and uncropped.
    With ``max_iters`` the list is repeated to hold at least max_iters samples.
    """

    def __init__(self, root, list_path, max_iters=None, crop_size=(321, 321), mean=(128, 128, 128),
                 scale=True, mirror=True, ignore_label=IGNORE_LABEL):
        self.files = read_list(root, list_path)
        if max_iters is not None:
            self.files = self.files * math.ceil(max_iters / len(self.files))
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
        label = read_train_ids(label_file, image.shape[:2])
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


class CSDataValSet(CSDataSet):
    """Whole-image evaluation samples: (image (3, H, W), label (H, W), size, name), no augmentation."""

    def __init__(self, root, list_path, mean=(128, 128, 128), ignore_label=IGNORE_LABEL):
        super().__init__(root, list_path, crop_size=None, mean=mean, scale=False, mirror=False,
                         ignore_label=ignore_label)


class CSDataTestSet(data.Dataset):
    """Cityscapes test images: (image float32 (3, H, W) BGR minus mean, size (H, W, 3), name)."""

    def __init__(self, root, list_path, mean=(128, 128, 128)):
        self.files = [image for image, _ in read_list(root, list_path, with_labels=False)]
        self.mean = np.asarray(mean, dtype=np.float64)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        image = read_image(self.files[index])
        name = os.path.splitext(os.path.basename(self.files[index]))[0]
        return normalize(image, self.mean), np.array(image.shape), name
