"""The dataset descriptions (--dataset cityscapes, voc, ade20k, folder) against hand-made samples:
label mapping, ignore, palette, list formats, scanning, the folder's warning and bad input."""
import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image

import evaluate
import train
from dataset.cityscapes_labels import ID_TO_TRAINID, PALETTE, TRAINID_TO_ID
from dataset.registry import DATASET_NAMES, get_dataset
from utils.errors import UserError, exit_on_user_error

MEAN = (104.0, 117.0, 123.0)

# The first colours of the Pascal VOC devkit's colour map, written out (value: RGB).
VOC_COLOURS = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128), 5: (128, 0, 128),
               8: (64, 0, 0), 15: (192, 128, 128), 20: (0, 64, 128)}


def write_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), array)


def random_image(height=6, width=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def labels_of(dataset, index=0):
    """The float32 (H, W) train ids of a whole-image sample, as uint8."""
    return dataset[index][1].astype(np.uint8)


def expected_image(image):
    return (image.astype(np.float64) - np.array(MEAN)).astype(np.float32).transpose(2, 0, 1)


@pytest.fixture
def voc_dir(tmp_path):
    """VOC2012 with one image: values 0, 5, 20 (classes), 21 and 100 (no class), 255 (the boundary)."""
    values = np.array([[0, 5, 20, 21, 100, 255]] * 4, dtype=np.uint8)
    write_png(tmp_path / "JPEGImages" / "2007_000033.jpg", random_image(4, 6))
    write_png(tmp_path / "SegmentationClassAug" / "2007_000033.png", values)
    return tmp_path, values


def test_voc_maps_0_to_20_to_themselves_and_everything_else_to_ignore(voc_dir):
    root, values = voc_dir
    (root / "upstream.txt").write_text("/JPEGImages/2007_000033.jpg /SegmentationClassAug/2007_000033.png\n")
    info = get_dataset("voc", str(root))
    dataset = info.val_set(str(root / "upstream.txt"), mean=MEAN)
    expected = np.array([[v if v <= 20 else 255 for v in row] for row in values], dtype=np.uint8)
    assert np.array_equal(labels_of(dataset), expected)
    assert dataset[0][3] == "2007_000033"
    assert np.array_equal(dataset[0][0], expected_image(cv2.imread(str(root / "JPEGImages" / "2007_000033.jpg"))))
    assert info.num_classes == 21 and info.class_names[15] == "person" and info.class_names[20] == "tvmonitor"
    assert np.array_equal(info.label_values, np.arange(21))


def test_voc_palette_is_the_devkit_colour_map(voc_dir):
    info = get_dataset("voc", str(voc_dir[0]))
    assert info.palette.shape == (21, 3) and info.palette.dtype == np.uint8
    for value, rgb in VOC_COLOURS.items():
        assert tuple(info.palette[value]) == rgb
    assert len({tuple(c) for c in info.palette}) == 21


def test_voc_list_of_ids_and_the_default_imagesets_list_read_the_same_sample(voc_dir):
    root, _ = voc_dir
    (root / "ids.txt").write_text("2007_000033\n")
    os.makedirs(root / "ImageSets" / "Segmentation")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n")
    (root / "upstream.txt").write_text("/JPEGImages/2007_000033.jpg /SegmentationClassAug/2007_000033.png\n")
    info = get_dataset("voc", str(root))
    expected = info.samples("val", str(root / "upstream.txt"))
    assert expected == [(str(root / "JPEGImages" / "2007_000033.jpg"), str(root / "SegmentationClassAug" /
                                                                            "2007_000033.png"))]
    assert info.samples("val", str(root / "ids.txt")) == expected
    assert info.samples("val") == expected
    assert info.test_set(str(root / "ids.txt")).files == [expected[0][0]]


def test_a_palette_png_label_is_read_as_its_indices(voc_dir):
    """The official VOC SegmentationClass PNGs are palette images: their indices are the label values."""
    root, values = voc_dir
    label = Image.fromarray(values, mode="P")
    label.putpalette(get_dataset("voc", str(root)).palette.ravel().tolist() + [224, 224, 192] * 235)
    os.makedirs(root / "SegmentationClass")
    label.save(root / "SegmentationClass" / "2007_000033.png")
    (root / "plain.txt").write_text("/JPEGImages/2007_000033.jpg /SegmentationClass/2007_000033.png\n")
    dataset = get_dataset("voc", str(root)).val_set(str(root / "plain.txt"))
    expected = np.array([[v if v <= 20 else 255 for v in row] for row in values], dtype=np.uint8)
    assert np.array_equal(labels_of(dataset), expected)


def test_an_rgb_label_is_a_user_error_naming_it(voc_dir):
    root, _ = voc_dir
    write_png(root / "SegmentationClassAug" / "2007_000033.png", random_image(4, 6))
    (root / "ids.txt").write_text("2007_000033\n")
    dataset = get_dataset("voc", str(root)).val_set(str(root / "ids.txt"))
    with pytest.raises(UserError, match="2007_000033.png is a RGB image"):
        dataset[0]


def test_ade20k_is_found_without_a_list_and_maps_1_to_150_to_0_to_149(tmp_path):
    values = np.array([[0, 1, 2, 150], [151, 200, 255, 75]], dtype=np.uint8)
    for split, folder in (("train", "training"), ("val", "validation")):
        for stem in ("ADE_x_00000002", "ADE_x_00000001"):
            write_png(tmp_path / "images" / folder / f"{stem}.jpg", random_image(2, 4))
            write_png(tmp_path / "annotations" / folder / f"{stem}.png", values)
    write_png(tmp_path / "images" / "testing" / "ADE_test_00000001.jpg", random_image(2, 4))
    info = get_dataset("ade20k", str(tmp_path))
    val = info.val_set()
    assert [os.path.basename(image) for image, _ in val.files] == ["ADE_x_00000001.jpg", "ADE_x_00000002.jpg"]
    assert np.array_equal(labels_of(val), [[255, 0, 1, 149], [255, 255, 255, 74]])
    assert len(info.train_set(crop_size=(2, 4))) == 2 and len(info.test_set()) == 1
    assert info.num_classes == 150 and info.class_names[0] == "wall" and info.class_names[149] == "flag"
    assert info.class_names[12] == "person" and info.class_names[136] == "traffic light"
    assert len(set(info.class_names)) == 150
    assert np.array_equal(info.label_values, np.arange(1, 151))
    assert info.palette.shape == (150, 3) and tuple(info.palette[0]) == VOC_COLOURS[1]
    assert len({tuple(c) for c in info.palette}) == 150


def test_cityscapes_description_is_upstream_table_and_lists(tmp_path):
    info = get_dataset("cityscapes", str(tmp_path))
    assert info.label_map is ID_TO_TRAINID and np.array_equal(info.palette, PALETTE)
    assert np.array_equal(info.label_values, TRAINID_TO_ID) and info.crop_size == (769, 769)
    with pytest.raises(UserError, match="dataset/list/cityscapes/train.lst line 1: file not found"):
        info.samples("train")
    assert DATASET_NAMES == ("cityscapes", "voc", "ade20k", "folder")


CLASSES_TXT = """# value red green blue name
3   10 20 30   traffic light   # a name may hold spaces
10  40 50 60   road

200 70 80 90   sky
"""


@pytest.fixture
def folder_dir(tmp_path):
    """A flat folder dataset: two images, labels with listed (3, 10, 200), unlisted (7) and 255 values."""
    (tmp_path / "classes.txt").write_text(CLASSES_TXT)
    labels = {"a": np.array([[3, 10, 200, 255]] * 2, np.uint8), "b": np.array([[3, 7, 10, 7]] * 2, np.uint8)}
    for stem, label in labels.items():
        write_png(tmp_path / "images" / f"{stem}.png", random_image(2, 4))
        write_png(tmp_path / "labels" / f"{stem}.png", label)
    return tmp_path


def test_folder_classes_txt_gives_names_colours_and_train_ids_in_file_order(folder_dir):
    info = get_dataset("folder", str(folder_dir))
    assert info.class_names == ("traffic light", "road", "sky")
    assert np.array_equal(info.palette, [[10, 20, 30], [40, 50, 60], [70, 80, 90]])
    assert np.array_equal(info.label_values, [3, 10, 200])
    dataset = info.val_set(mean=MEAN, warn=False)
    assert np.array_equal(labels_of(dataset, 0), [[0, 1, 2, 255]] * 2)
    assert np.array_equal(labels_of(dataset, 1), [[0, 255, 1, 255]] * 2)
    assert np.array_equal(dataset[0][0], expected_image(cv2.imread(str(folder_dir / "images" / "a.png"))))


def test_folder_classes_json_reads_like_classes_txt(folder_dir):
    os.remove(folder_dir / "classes.txt")
    (folder_dir / "classes.json").write_text(json.dumps([
        {"value": 3, "name": "traffic light", "color": [10, 20, 30]},
        {"value": 10, "name": "road", "color": [40, 50, 60]},
        {"value": 200, "name": "sky", "color": [70, 80, 90]}]))
    info = get_dataset("folder", str(folder_dir))
    assert info.class_names == ("traffic light", "road", "sky") and np.array_equal(info.label_values, [3, 10, 200])
    assert np.array_equal(info.palette[2], [70, 80, 90])


def test_folder_unlisted_value_is_one_warning_naming_the_first_file(folder_dir, capsys):
    info = get_dataset("folder", str(folder_dir))
    dataset = info.train_set(crop_size=(2, 4), mean=MEAN)
    assert len(dataset) == 2
    err = capsys.readouterr().err
    assert err == (f"warning: {folder_dir / 'labels' / 'b.png'} holds label value 7, which classes.txt does not "
                   "list: pixels of unlisted values are ignored\n")
    info.val_set(warn=False)
    assert capsys.readouterr().err == ""


def test_folder_split_subfolders_are_used_when_present(folder_dir):
    for split in ("train", "val"):
        write_png(folder_dir / "images" / split / f"{split}1.jpg", random_image(2, 4))
        write_png(folder_dir / "labels" / split / f"{split}1.png", np.full((2, 4), 10, np.uint8))
    info = get_dataset("folder", str(folder_dir))
    assert [os.path.basename(i) for i, _ in info.samples("train")] == ["train1.jpg"]
    assert [os.path.basename(i) for i, _ in info.samples("val")] == ["val1.jpg"]
    assert [os.path.basename(i) for i, _ in info.samples("test")] == ["a.png", "b.png"]


@pytest.mark.parametrize("text,message", [
    ("3 10 20 30\n", "line 1: expected VALUE RED GREEN BLUE NAME"),
    ("255 1 2 3 void\n", "line 1: the label value must be an integer in 0..254"),
    ("3 1 2 300 sky\n", "line 1: the colour must be three integers in 0..255"),
    ("3 1 2 3 sky\n3 4 5 6 road\n", "label value 3 is listed twice"),
    ("# nothing\n", "lists no classes"),
])
def test_a_bad_classes_txt_is_a_user_error_naming_the_file(folder_dir, text, message):
    (folder_dir / "classes.txt").write_text(text)
    with pytest.raises(UserError, match=message) as error:
        get_dataset("folder", str(folder_dir))
    assert str(folder_dir / "classes.txt") in str(error.value)


def run_main(module, argv):
    """A script's main on argv as the script runs it (UserError -> one line on stderr, exit 1)."""
    return exit_on_user_error(module.main)(module.get_args_parser().parse_args(argv))


@pytest.mark.parametrize("module", [train, evaluate])
def test_missing_classes_file_stops_the_script_with_one_line_naming_the_folder(folder_dir, module, capsys):
    os.remove(folder_dir / "classes.txt")
    with pytest.raises(SystemExit) as stop:
        run_main(module, ["--dataset", "folder", "--data-dir", str(folder_dir), "--restore-from", "none"])
    err = capsys.readouterr().err
    assert stop.value.code == 1
    assert err == (f"error: no classes file in {folder_dir}: write classes.txt or classes.json "
                   "(a label value, colour and name for each class)\n")


@pytest.mark.parametrize("module", [train, evaluate])
def test_an_image_without_its_label_stops_the_script_with_one_line_naming_it(folder_dir, module, capsys, tmp_path):
    write_png(folder_dir / "images" / "c.jpg", random_image(2, 4))
    with pytest.raises(SystemExit) as stop:
        run_main(module, ["--dataset", "folder", "--data-dir", str(folder_dir), "--restore-from", "none",
                          "--snapshot-dir" if module is train else "--Output", f"{tmp_path}/out/"])
    assert stop.value.code == 1
    assert capsys.readouterr().err == (f"error: image {folder_dir / 'images' / 'c.jpg'} has no label "
                                       f"{folder_dir / 'labels' / 'c.png'}\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module", [train, evaluate])
def test_an_unknown_dataset_is_one_line_naming_it(module, capsys):
    with pytest.raises(SystemExit) as stop:
        module.get_args_parser().parse_args(["--dataset", "coco"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: argument --dataset: invalid choice: 'coco'")
    with pytest.raises(UserError, match="unknown dataset 'coco': choose from cityscapes, voc, ade20k, folder"):
        get_dataset("coco", ".")
