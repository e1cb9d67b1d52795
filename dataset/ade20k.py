"""The ADE20K (SceneParsing, ADEChallengeData2016) description: 150 classes, label 0 ("other")
ignored and 1..150 trained as 0..149, splits found by scanning the official layout.

Zhou et al., "Scene Parsing through ADE20K Dataset", CVPR 2017. The names are the first name of
each class in the benchmark's objectInfo150 table; the colours are the Pascal VOC colour map of the
label values 1..150.
"""
import os

import numpy as np

from dataset.description import IGNORE_LABEL, DatasetInfo, paired_files
from dataset.palette import voc_colormap

CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door",
    "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine",
    "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman",
    "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle",
    "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle",
    "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)
NUM_CLASSES = len(CLASS_NAMES)
PALETTE = voc_colormap(NUM_CLASSES + 1)[1:]  # (150, 3) RGB, the colour of label value k + 1

LABEL_MAP = np.full(256, IGNORE_LABEL, dtype=np.uint8)
LABEL_MAP[1:NUM_CLASSES + 1] = np.arange(NUM_CLASSES)

# Our split names -> the folder names of the official release (the test release's images/testing).
FOLDERS = {"train": "training", "val": "validation", "test": "testing"}


def find_samples(data_dir, split):
    """images/<folder>/*.jpg with annotations/<folder>/<stem>.png (test: images only)."""
    folder = FOLDERS[split]
    return paired_files(os.path.join(data_dir, "images", folder), os.path.join(data_dir, "annotations", folder),
                        (".jpg",), ".png", with_labels=split != "test")


def describe(data_dir):
    """ADEChallengeData2016 under data_dir."""
    return DatasetInfo(name="ade20k", data_dir=data_dir, class_names=CLASS_NAMES, palette=PALETTE,
                       label_map=LABEL_MAP, crop_size=(512, 512),
                       find_samples=lambda split: find_samples(data_dir, split))
