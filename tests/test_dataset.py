"""Cityscapes datasets: outputs against direct computations, augmentation geometry, bad data."""
import os
import random

import cv2
import numpy as np
import pytest

from dataset.cityscapes_labels import (CLASS_NAMES, ID_TO_TRAINID, LABELS, PALETTE, TRAINID_TO_ID,
                                       colorize)
from dataset.datasets import SCALES, CSDataSet, CSDataTestSet, CSDataValSet
from utils.errors import UserError

MEAN = np.array((104.00698793, 116.66876762, 122.67891434))


def _official_train_id(label_id):
    """The train id of a label id, looked up in the label table (255 for ids the table lacks)."""
    for label in LABELS:
        if label.id == label_id:
            return label.train_id
    return 255


def _write_sample(root, stem, image, label_ids):
    image_path, label_path = f"img/{stem}_leftImg8bit.png", f"gt/{stem}_gtFine_labelIds.png"
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    os.makedirs(os.path.join(root, "gt"), exist_ok=True)
    cv2.imwrite(os.path.join(root, image_path), image)
    cv2.imwrite(os.path.join(root, label_path), label_ids)
    return f"{image_path}\t{label_path}"


def _write_list(root, lines, name="list.lst"):
    path = os.path.join(root, name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


@pytest.fixture
def sample(tmp_path):
    """One 24x40 random BGR image with random label ids 0..40 (ids above 33 are not in the table)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(24, 40, 3), dtype=np.uint8)
    label_ids = rng.integers(0, 41, size=(24, 40), dtype=np.uint8)
    list_path = _write_list(tmp_path, [_write_sample(tmp_path, "a_000000_000019", image, label_ids)])
    return str(tmp_path), list_path, image, label_ids


def test_label_table_derivations_are_consistent():
    assert len(LABELS) == 34 and len(CLASS_NAMES) == 19 and PALETTE.shape == (19, 3)
    assert np.array_equal(ID_TO_TRAINID[TRAINID_TO_ID], np.arange(19))
    assert all(ID_TO_TRAINID[i] == _official_train_id(i) for i in range(256))
    rgb = np.array(colorize(np.array([[0, 18, 255]])).convert("RGB"))
    assert np.array_equal(rgb[0], [PALETTE[0], PALETTE[18], (0, 0, 0)])


def test_whole_image_is_bgr_minus_mean_and_official_train_ids(sample):
    root, list_path, image, label_ids = sample
    out_image, out_label, size, name = CSDataSet(root, list_path, crop_size=(24, 40), mean=MEAN,
                                                 scale=False, mirror=False)[0]
    expected_image = (image.astype(np.float64) - MEAN).astype(np.float32).transpose(2, 0, 1)
    expected_label = np.vectorize(_official_train_id)(label_ids).astype(np.float32)
    assert out_image.dtype == np.float32 and out_label.dtype == np.float32
    assert np.array_equal(out_image, expected_image)
    assert np.array_equal(out_label, expected_label)
    assert tuple(size) == (24, 40, 3) and name == "a_000000_000019_gtFine_labelIds"
    val_image, val_label, _, _ = CSDataValSet(root, list_path, mean=MEAN)[0]
    assert np.array_equal(val_image, expected_image) and np.array_equal(val_label, expected_label)


def _upstream_pipeline(image, train_ids, crop, mean, ignore=255):
    """The CCNet recipe written out plainly: scale the whole image, subtract, pad, crop, mirror."""
    f = random.choice(SCALES)
    image = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(train_ids, None, fx=f, fy=f, interpolation=cv2.INTER_NEAREST)
    image = image.astype(np.float32)
    image -= mean
    pad_h, pad_w = max(crop[0] - label.shape[0], 0), max(crop[1] - label.shape[1], 0)
    image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(0.0, 0.0, 0.0))
    label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(ignore,))
    y = random.randint(0, label.shape[0] - crop[0])
    x = random.randint(0, label.shape[1] - crop[1])
    image = image[y:y + crop[0], x:x + crop[1]].transpose(2, 0, 1)
    label = label[y:y + crop[0], x:x + crop[1]].astype(np.float32)
    if random.random() < 0.5:
        image, label = image[:, :, ::-1], label[:, ::-1]
    return image, label


def test_scaled_padded_crop_matches_the_recipe_computed_directly(sample):
    root, list_path, image, label_ids = sample
    dataset = CSDataSet(root, list_path, crop_size=(30, 30), mean=MEAN, scale=True, mirror=True)
    for seed in range(12):
        random.seed(seed)
        out_image, out_label, _, _ = dataset[0]
        random.seed(seed)
        expected_image, expected_label = _upstream_pipeline(image, ID_TO_TRAINID[label_ids], (30, 30), MEAN)
        assert out_image.shape == (3, 30, 30) and out_label.shape == (30, 30)
        assert np.array_equal(out_image, expected_image)
        assert np.array_equal(out_label, expected_label)


def test_mirror_keeps_image_and_label_aligned(tmp_path):
    label_ids = np.tile((np.arange(40) % 34).astype(np.uint8), (24, 1))
    image = np.repeat((label_ids * 7)[:, :, None], 3, axis=2)  # the image spells out each pixel's id
    list_path = _write_list(tmp_path, [_write_sample(tmp_path, "m", image, label_ids)])
    dataset = CSDataSet(str(tmp_path), list_path, crop_size=(16, 20), mean=(0, 0, 0), scale=False, mirror=True)
    orientations = set()
    for seed in range(16):
        random.seed(seed)
        out_image, out_label, _, _ = dataset[0]
        ids = np.rint(out_image[0] / 7).astype(np.uint8)
        assert np.array_equal(ID_TO_TRAINID[ids], out_label)
        orientations.add(bool(ids[0, 0] < ids[0, 1]))
    assert orientations == {True, False}


def test_crop_larger_than_image_pads_with_zero_and_ignore(sample):
    root, list_path, image, label_ids = sample
    out_image, out_label, _, _ = CSDataSet(root, list_path, crop_size=(31, 45), mean=MEAN,
                                           scale=False, mirror=False)[0]
    assert out_image.shape == (3, 31, 45) and out_label.shape == (31, 45)
    expected = (image.astype(np.float64) - MEAN).astype(np.float32).transpose(2, 0, 1)
    assert np.array_equal(out_image[:, :24, :40], expected)
    assert np.array_equal(out_label[:24, :40], ID_TO_TRAINID[label_ids])
    assert not out_image[:, 24:].any() and not out_image[:, :, 40:].any()
    assert (out_label[24:] == 255).all() and (out_label[:, 40:] == 255).all()


def test_max_iters_repeats_the_list(sample):
    root, list_path, _, _ = sample
    assert len(CSDataSet(root, list_path, max_iters=5)) == 5
    assert len(CSDataSet(root, list_path)) == 1


def test_test_set_returns_whole_image_size_and_image_stem(sample):
    root, _, image, _ = sample
    list_path = _write_list(root, ["img/a_000000_000019_leftImg8bit.png"], "test.lst")
    out_image, size, name = CSDataTestSet(root, list_path, mean=MEAN)[0]
    assert np.array_equal(out_image, (image.astype(np.float64) - MEAN).astype(np.float32).transpose(2, 0, 1))
    assert tuple(size) == (24, 40, 3) and name == "a_000000_000019_leftImg8bit"


def test_missing_file_is_a_user_error_naming_it_when_built(sample):
    root, list_path, _, _ = sample
    bad = _write_list(root, [open(list_path).read().strip(), "img/gone.png\tgt/gone.png"], "bad.lst")
    with pytest.raises(UserError, match="gone.png"):
        CSDataSet(root, bad)
    with pytest.raises(UserError, match="nope.lst"):
        CSDataSet(root, os.path.join(root, "nope.lst"))


def test_corrupt_image_is_a_user_error_naming_it_when_read(sample):
    root, list_path, _, _ = sample
    with open(os.path.join(root, "img", "a_000000_000019_leftImg8bit.png"), "wb") as f:
        f.write(b"not a png")
    dataset = CSDataSet(root, list_path)
    with pytest.raises(UserError, match="a_000000_000019_leftImg8bit.png"):
        dataset[0]


def test_image_label_size_mismatch_is_a_user_error_naming_the_label(tmp_path):
    line = _write_sample(tmp_path, "s", np.zeros((24, 40, 3), np.uint8), np.zeros((20, 40), np.uint8))
    dataset = CSDataSet(str(tmp_path), _write_list(tmp_path, [line]))
    with pytest.raises(UserError, match="s_gtFine_labelIds.png"):
        dataset[0]
