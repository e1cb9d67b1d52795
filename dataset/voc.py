"""The Pascal VOC 2012 description: 21 classes (background first), 255 (the object boundary) ignored,
the devkit's colour map, upstream's list format."""
import os

from dataset.datasets import read_list
from dataset.description import DatasetInfo, identity_map
from dataset.palette import voc_colormap

CLASS_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
NUM_CLASSES = len(CLASS_NAMES)
PALETTE = voc_colormap(NUM_CLASSES)  # (21, 3) RGB

# Where a list line holding a bare id points, relative to --data-dir (upstream's lists spell the
# same paths out: "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png").
ID_PATHS = ("JPEGImages/{}.jpg", "SegmentationClassAug/{}.png")
SPLIT_LIST = os.path.join("ImageSets", "Segmentation", "{}.txt")


def describe(data_dir):
    """VOC2012 under data_dir; default lists are its ImageSets/Segmentation/{train,val,test}.txt ids."""
    return DatasetInfo(
        name="voc", data_dir=data_dir, class_names=CLASS_NAMES, palette=PALETTE, label_map=identity_map(NUM_CLASSES),
        crop_size=(513, 513), id_paths=ID_PATHS,
        find_samples=lambda split: read_list(data_dir, os.path.join(data_dir, SPLIT_LIST.format(split)),
                                             with_labels=split != "test", id_paths=ID_PATHS))
