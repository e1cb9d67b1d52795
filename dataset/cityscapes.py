"""The Cityscapes description: 19 train ids of the official label ids, upstream's list files."""
from dataset.cityscapes_labels import CLASS_NAMES, ID_TO_TRAINID, PALETTE
from dataset.datasets import read_list
from dataset.description import DatasetInfo

# Upstream's default lists, relative to the working directory; their paths are relative to --data-dir.
LIST = "./dataset/list/cityscapes/{}.lst"


def describe(data_dir):
    """Cityscapes under data_dir (leftImg8bit/, gtFine/), split lists from ./dataset/list/cityscapes/."""
    return DatasetInfo(
        name="cityscapes", data_dir=data_dir, class_names=CLASS_NAMES, palette=PALETTE, label_map=ID_TO_TRAINID,
        crop_size=(769, 769),
        find_samples=lambda split: read_list(data_dir, LIST.format(split), with_labels=split != "test"))
