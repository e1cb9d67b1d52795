"""Every --dataset end to end on its synthetic layout: 2 training steps, then evaluation reporting its
class names and writing predictions in its palette (a folder label with an unlisted value warns once)."""
import os

import cv2
import numpy as np
import pytest
from PIL import Image

import evaluate
import train
from dataset.cityscapes_labels import ID_TO_TRAINID
from dataset.registry import DATASET_NAMES, get_dataset
from dataset.synthetic import make_synthetic

# Which raw label values each dataset counts, written out independently of its lookup table.
COUNTED = {
    "cityscapes": lambda v: ID_TO_TRAINID[v] != 255,
    "voc": lambda v: v <= 20,
    "ade20k": lambda v: (v >= 1) & (v <= 150),
    "folder": lambda v: np.isin(v, [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]),
}
UNLISTED = 99


@pytest.fixture(scope="module", params=DATASET_NAMES)
def synthetic(request, tmp_path_factory):
    """(name, root, extra flags, splits): 2 train, 1 val, 1 test synthetic image of 32x64."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    splits = make_synthetic(str(root), name, num_train=2, num_val=1, num_test=1, height=32, width=64)
    # cityscapes' default lists are the official ones in ./dataset/list/cityscapes/: pass the synthetic ones
    lists = {"train": splits["train"], "val": splits["val"], "test": splits["test"]} if name == "cityscapes" else {}
    return name, str(root), lists


def flags(root, name, lists, split):
    return ["--dataset", name, "--data-dir", root, "--model", "ccnet", "--recurrence", "1", "--num-workers", "0",
            *(["--data-list", lists[split]] if split in lists else [])]


def test_two_training_steps_then_evaluation_in_the_dataset_classes_and_colours(synthetic, tmp_path, capsys,
                                                                                 monkeypatch):
    name, root, lists = synthetic
    info = get_dataset(name, root)
    unlisted_file = None
    if name == "folder":
        unlisted_file = os.path.join(root, "labels", "train", "scene_0001.png")
        label = cv2.imread(unlisted_file, cv2.IMREAD_GRAYSCALE)
        label[0, :4] = UNLISTED
        cv2.imwrite(unlisted_file, label)
    palettes, logger = [], train.TrainLogger
    monkeypatch.setattr(train, "TrainLogger",
                        lambda *args, **kwargs: palettes.append(args[4]) or logger(*args, **kwargs))
    snapshots = tmp_path / "snapshots"
    net = train.main(train.get_args_parser().parse_args(flags(root, name, lists, "train") + [
        "--snapshot-dir", str(snapshots), "--restore-from", "none", "--input-size", "33,33", "--batch-size", "2",
        "--num-steps", "2", "--save-pred-every", "2", "--print-frequency", "1", "--depth", "50"]))
    train_out = capsys.readouterr()
    assert net.head.bottleneck[-1].out_channels == info.num_classes  # --num-classes from the dataset
    assert (snapshots / "CS_scenes_2.pth").is_file()
    assert len(palettes) == 1 and np.array_equal(palettes[0], info.palette)
    if unlisted_file:
        assert train_out.err == (f"warning: {unlisted_file} holds label value {UNLISTED}, which classes.txt does "
                                 "not list: pixels of unlisted values are ignored\n")
    else:
        assert train_out.err == ""
    os.remove(snapshots / "last.pth")

    out = tmp_path / "eval"
    eval_flags = ["--restore-from", str(snapshots / "CS_scenes_2.pth"), "--whole", "true", "--Output", f"{out}/"]
    confmat = evaluate.main(evaluate.get_args_parser().parse_args(flags(root, name, lists, "val") + eval_flags))
    table = capsys.readouterr().out.splitlines()
    assert confmat.num_classes == info.num_classes
    [(_, label_file)] = info.samples("val", lists.get("val"))
    values = np.array(Image.open(label_file))
    assert int(confmat.matrix.sum()) == int(COUNTED[name](values).sum())
    first = table.index(next(line for line in table if line.split() == ["class", "IoU", "Acc"])) + 1
    assert [line.rsplit(maxsplit=2)[0] for line in table[first:first + info.num_classes]] == list(info.class_names)
    [prediction] = (out / "outputs").iterdir()
    image = Image.open(prediction)
    assert image.mode == "P" and image.size == (64, 32)
    assert np.array_equal(np.array(image.getpalette()[:3 * info.num_classes]).reshape(-1, 3), info.palette)
    if name == "ade20k":  # --test writes label values 1..150 beside the train ids 0..149
        test_out = tmp_path / "test"
        eval_flags[-1] = f"{test_out}/"
        assert evaluate.main(evaluate.get_args_parser().parse_args(flags(root, name, lists, "test") + eval_flags
                                                                   + ["--test"])) is None
        [prediction] = (test_out / "outputs").glob("*.png")
        train_ids = np.array(Image.open(prediction))
        assert np.array_equal(np.array(Image.open(test_out / "outputs" / "label_ids" / prediction.name)), train_ids + 1)
    os.remove(snapshots / "CS_scenes_2.pth")
