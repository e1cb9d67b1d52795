"""What the scripts know of a dataset: one small description holding its classes, colours,
label values, default crop size and where its files are, and the datasets built from it."""
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Optional

import numpy as np

from dataset.datasets import IGNORE_LABEL, ImageSet, SegmentationDataSet, read_label, read_list
from utils.errors import UserError, warn
from utils.palette import palette_image

SPLITS = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class DatasetInfo:
    """One dataset under data_dir.

    class_names: K names in train-id order; palette: (K, 3) uint8 RGB; label_map: (256,) uint8 raw
    label value -> train id (255 = ignore); crop_size: default (height, width) of training crops and
    evaluation tiles; find_samples(split) -> [(image file, label file or None)] for 'train', 'val'
    and 'test' (images only) when no list file is given; id_paths: (image, label) path templates of
    list lines that hold a bare id; unlisted_source: the file declaring the classes when label values
    it does not list must be reported (one warning naming the first label file holding one).
    """
    name: str
    data_dir: str
    class_names: tuple
    palette: np.ndarray
    label_map: np.ndarray
    crop_size: tuple
    find_samples: Callable
    id_paths: Optional[tuple] = None
    unlisted_source: Optional[str] = None

    def __post_init__(self):
        if self.palette.shape != (self.num_classes, 3) or self.label_map.shape != (256,):
            raise ValueError(f"{self.name}: palette {self.palette.shape} and label map {self.label_map.shape} "
                             f"do not fit {self.num_classes} classes")

    @property
    def num_classes(self):
        return len(self.class_names)

    @cached_property
    def label_values(self):
        """(K,) uint8: the smallest raw label value of each train id (what --test writes as label ids)."""
        values = np.zeros(self.num_classes, dtype=np.uint8)
        for value in range(255, -1, -1):
            if self.label_map[value] < self.num_classes:
                values[self.label_map[value]] = value
        return values

    def samples(self, split, list_path=None):
        """[(image file, label file or None)] of a split ('test': images only), from list_path when given."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if list_path is not None:
            return read_list(self.data_dir, list_path, with_labels=split != "test", id_paths=self.id_paths)
        return self.find_samples(split)

    def train_set(self, list_path=None, warn=True, **kwargs):
        """The training SegmentationDataSet (kwargs: crop_size, mean, scale, mirror, ignore_label, max_iters);
        warn: report an unlisted label value (False on all processes but one)."""
        samples = self.samples("train", list_path)
        if warn:
            self.warn_unlisted(samples)
        return SegmentationDataSet(samples, self.label_map, **kwargs)

    def val_set(self, list_path=None, mean=(128, 128, 128), ignore_label=IGNORE_LABEL, warn=True):
        """Whole validation images with their train ids, no augmentation; warn as in train_set."""
        samples = self.samples("val", list_path)
        if warn:
            self.warn_unlisted(samples)
        return SegmentationDataSet(samples, self.label_map, crop_size=None, mean=mean, scale=False, mirror=False,
                                   ignore_label=ignore_label)

    def test_set(self, list_path=None, mean=(128, 128, 128)):
        """The unlabelled test images."""
        return ImageSet([image for image, _ in self.samples("test", list_path)], mean)

    def warn_unlisted(self, samples):
        """With unlisted_source: print one warning naming the first label file holding a value that
        the classes do not list (255 aside); those pixels are ignored. Returns that (file, value) or None."""
        if self.unlisted_source is None:
            return None
        unlisted = self.label_map == IGNORE_LABEL
        unlisted[IGNORE_LABEL] = False
        for _, label_file in samples:
            counts = np.bincount(read_label(label_file).ravel(), minlength=256)  # (256,)
            found = np.flatnonzero(unlisted & (counts > 0))
            if len(found):
                warn(f"{label_file} holds label value {found[0]}, which {self.unlisted_source} does not list: "
                     "pixels of unlisted values are ignored")
                return label_file, int(found[0])
        return None

    def colorize(self, train_ids):
        """(H, W) integer train ids -> PIL 'P' image in this dataset's palette (ignore black)."""
        return palette_image(train_ids, self.palette)


def identity_map(num_classes):
    """(256,) uint8 lookup keeping 0..num_classes-1 and sending every other value to ignore."""
    label_map = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    label_map[:num_classes] = np.arange(num_classes)
    return label_map


def paired_files(image_dir, label_dir, image_extensions, label_extension, with_labels=True):
    """Sorted [(image, label or None)] of the images in image_dir, each label label_dir/<stem><label_extension>."""
    if not os.path.isdir(image_dir):
        raise UserError(f"no folder {image_dir}")
    images = sorted(name for name in os.listdir(image_dir) if name.lower().endswith(image_extensions))
    if not images:
        raise UserError(f"no images ({', '.join(image_extensions)}) in {image_dir}")
    samples = []
    for name in images:
        label = os.path.join(label_dir, os.path.splitext(name)[0] + label_extension)
        if with_labels and not os.path.isfile(label):
            raise UserError(f"image {os.path.join(image_dir, name)} has no label {label}")
        samples.append((os.path.join(image_dir, name), label if with_labels else None))
    return samples
