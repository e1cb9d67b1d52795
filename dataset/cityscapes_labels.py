"""The 34 official Cityscapes labels and everything derived from them.

One table (name, label id, train id, colour) as defined by the Cityscapes benchmark
(Cordts et al., "The Cityscapes Dataset for Semantic Urban Scene Understanding", CVPR 2016);
the id -> train id lookup, the 19 evaluated class names and the colour palette all come from it.
"""
from collections import namedtuple

import numpy as np

from utils.palette import palette_image

__all__ = ["LABELS", "IGNORE_LABEL", "NUM_CLASSES", "ID_TO_TRAINID", "TRAINID_TO_ID",
           "CLASS_NAMES", "PALETTE", "colorize"]

Label = namedtuple("Label", ["name", "id", "train_id", "color"])

IGNORE_LABEL = 255

LABELS = (
    Label("unlabeled", 0, 255, (0, 0, 0)),
    Label("ego vehicle", 1, 255, (0, 0, 0)),
    Label("rectification border", 2, 255, (0, 0, 0)),
    Label("out of roi", 3, 255, (0, 0, 0)),
    Label("static", 4, 255, (0, 0, 0)),
    Label("dynamic", 5, 255, (111, 74, 0)),
    Label("ground", 6, 255, (81, 0, 81)),
    Label("road", 7, 0, (128, 64, 128)),
    Label("sidewalk", 8, 1, (244, 35, 232)),
    Label("parking", 9, 255, (250, 170, 160)),
    Label("rail track", 10, 255, (230, 150, 140)),
    Label("building", 11, 2, (70, 70, 70)),
    Label("wall", 12, 3, (102, 102, 156)),
    Label("fence", 13, 4, (190, 153, 153)),
    Label("guard rail", 14, 255, (180, 165, 180)),
    Label("bridge", 15, 255, (150, 100, 100)),
    Label("tunnel", 16, 255, (150, 120, 90)),
    Label("pole", 17, 5, (153, 153, 153)),
    Label("polegroup", 18, 255, (153, 153, 153)),
    Label("traffic light", 19, 6, (250, 170, 30)),
    Label("traffic sign", 20, 7, (220, 220, 0)),
    Label("vegetation", 21, 8, (107, 142, 35)),
    Label("terrain", 22, 9, (152, 251, 152)),
    Label("sky", 23, 10, (70, 130, 180)),
    Label("person", 24, 11, (220, 20, 60)),
    Label("rider", 25, 12, (255, 0, 0)),
    Label("car", 26, 13, (0, 0, 142)),
    Label("truck", 27, 14, (0, 0, 70)),
    Label("bus", 28, 15, (0, 60, 100)),
    Label("caravan", 29, 255, (0, 0, 90)),
    Label("trailer", 30, 255, (0, 0, 110)),
    Label("train", 31, 16, (0, 80, 100)),
    Label("motorcycle", 32, 17, (0, 0, 230)),
    Label("bicycle", 33, 18, (119, 11, 32)),
)

_TRAIN = sorted((label for label in LABELS if label.train_id != IGNORE_LABEL), key=lambda l: l.train_id)

NUM_CLASSES = len(_TRAIN)

# uint8 lookup over all 256 possible pixel values; ids missing from the table map to ignore.
ID_TO_TRAINID = np.full(256, IGNORE_LABEL, dtype=np.uint8)
for _label in LABELS:
    ID_TO_TRAINID[_label.id] = _label.train_id

TRAINID_TO_ID = np.array([label.id for label in _TRAIN], dtype=np.uint8)
CLASS_NAMES = tuple(label.name for label in _TRAIN)
PALETTE = np.array([label.color for label in _TRAIN], dtype=np.uint8)  # (19, 3) RGB


def colorize(label):
    """HxW integer train ids -> PIL 'P' image in the Cityscapes colours (255 and unknown ids black)."""
    return palette_image(label, PALETTE)
