"""The synthetic Cityscapes, the list writer, and the synthetic layouts of the other datasets."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dataset.cityscapes_labels import ID_TO_TRAINID, TRAINID_TO_ID
from dataset.datasets import CSDataSet
from dataset.make_lists import write_list
from dataset.registry import get_dataset
from dataset.synthetic import ADE20K_VALUES, COLORS, VOC_VALUES, make_synthetic, make_synthetic_cityscapes
from utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    lists = make_synthetic_cityscapes(root, num_train=2, num_val=1, num_test=1, height=64, width=128, seed=3)
    return root, lists


def _read_lines(path):
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f]


def test_tiny_set_is_written_in_the_official_layout(tiny):
    root, lists = tiny
    assert sorted(lists) == ["test", "train", "val"]
    train = _read_lines(lists["train"])
    assert train[0] == ["leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
                        "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"]
    assert len(train) == 2 and len(_read_lines(lists["val"])) == 1
    assert _read_lines(lists["test"]) == [["leftImg8bit/test/berlin/berlin_000000_000019_leftImg8bit.png"]]
    image = cv2.imread(os.path.join(root, train[0][0]))
    assert image.shape == (64, 128, 3)


def test_labels_are_official_ids_with_every_class_in_every_image(tiny):
    root, lists = tiny
    for split in ("train", "val"):
        for _, label_path in _read_lines(lists[split]):
            ids = cv2.imread(os.path.join(root, label_path), cv2.IMREAD_GRAYSCALE)
            assert set(np.unique(ids)) <= set(TRAINID_TO_ID.tolist()) | {1}
            assert set(np.unique(ID_TO_TRAINID[ids])) - {255} == set(range(19))


def test_the_colour_of_a_pixel_identifies_its_class(tiny):
    root, lists = tiny
    image_path, label_path = _read_lines(lists["train"])[0]
    rgb = cv2.imread(os.path.join(root, image_path))[:, :, ::-1].astype(np.int32)
    train_ids = ID_TO_TRAINID[cv2.imread(os.path.join(root, label_path), cv2.IMREAD_GRAYSCALE)]
    nearest = np.abs(rgb[:, :, None, :] - COLORS[None, None].astype(np.int32)).sum(-1).argmin(-1)
    valid = train_ids != 255
    assert (nearest[valid] == train_ids[valid]).all()


def test_dataset_reads_the_synthetic_lists(tiny):
    root, lists = tiny
    image, label, size, name = CSDataSet(root, lists["train"], crop_size=(48, 48))[1]
    assert image.shape == (3, 48, 48) and label.shape == (48, 48) and tuple(size) == (64, 128, 3)
    assert name == "aachen_000001_000019_gtFine_labelIds"


def test_make_lists_reproduces_the_synthetic_lists_and_joins_splits(tiny, tmp_path):
    root, lists = tiny
    for split in ("train", "test"):
        out = str(tmp_path / f"{split}.lst")
        write_list(root, [split], out)
        assert _read_lines(out) == _read_lines(lists[split])
    assert write_list(root, ["train", "val"], str(tmp_path / "trainval.lst")) == 3


def test_make_lists_reports_an_image_without_label(tmp_path):
    os.makedirs(tmp_path / "leftImg8bit" / "val" / "x")
    cv2.imwrite(str(tmp_path / "leftImg8bit" / "val" / "x" / "x_0_0_leftImg8bit.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError, match="x_0_0_gtFine_labelIds.png"):
        write_list(str(tmp_path), ["val"], str(tmp_path / "val.lst"))


def test_make_lists_cli_prints_one_line_and_exits_1_on_a_bad_folder(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dataset.make_lists", "--data-dir", str(tmp_path / "none"),
                             "--out", str(tmp_path / "val.lst")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: no folder")


@pytest.mark.parametrize("name,values,ignored", [
    ("voc", VOC_VALUES, 255), ("ade20k", ADE20K_VALUES, 0), ("folder", TRAINID_TO_ID.tolist(), 255)])
def test_every_layout_is_found_by_its_dataset_with_the_classes_as_its_label_values(tmp_path, name, values, ignored):
    splits = make_synthetic(str(tmp_path), name, num_train=2, num_val=1, num_test=1, height=32, width=64, seed=3)
    info = get_dataset(name, str(tmp_path))
    assert [len(info.samples(split)) for split in ("train", "val", "test")] == [2, 1, 1]
    assert info.samples("test")[0][1] is None and os.path.exists(splits["test"])
    label_ids = []
    for image_file, label_file in info.samples("train") + info.samples("val"):
        label = cv2.imread(label_file, cv2.IMREAD_GRAYSCALE)
        assert label.shape == cv2.imread(image_file).shape[:2] == (32, 64)
        label_ids.append(label)
    assert set(np.unique(label_ids)) <= set(values) | {ignored}
    assert set(np.unique(label_ids)) >= set(values)
