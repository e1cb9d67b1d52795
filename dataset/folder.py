"""Your own data: the description of a folder with images/, labels/ and a classes file.

    DIR/classes.txt (or classes.json)   each class: its label value, colour and name
    DIR/images/<stem>.jpg|.jpeg|.png|.bmp
    DIR/labels/<stem>.png               8-bit grayscale or palette PNG of label values

or images/{train,val,test}/ and labels/{train,val}/ for separate splits (without them every split
is the whole folder). classes.txt holds one class a line, ``VALUE RED GREEN BLUE NAME`` (the name
may hold spaces; '#' starts a comment); classes.json a list of {"value", "name", "color": [r, g, b]}.
Train ids follow the file's order. 255 is always ignored; other values the file does not list are
ignored with one warning naming the first label file that holds one.
"""
import json
import os

import numpy as np

from dataset.description import IGNORE_LABEL, DatasetInfo, paired_files
from utils.errors import UserError

CLASS_FILES = ("classes.txt", "classes.json")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def _class(path, where, value, name, color):
    """(value, name, (r, g, b)) checked: value in 0..254, a name, three colour components in 0..255."""
    def byte(x, top):
        return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= top
    if not byte(value, IGNORE_LABEL - 1):
        raise UserError(f"{path} {where}: the label value must be an integer in 0..254 (255 is ignore), got {value!r}")
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{path} {where}: a class needs a name")
    if not isinstance(color, (list, tuple)) or len(color) != 3 or not all(byte(c, 255) for c in color):
        raise UserError(f"{path} {where}: the colour must be three integers in 0..255, got {color!r}")
    return value, name.strip(), tuple(color)


def _int_or_text(text):
    return int(text) if text.lstrip("-").isdigit() else text


def _read_txt(path):
    classes = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            fields = line.split("#", 1)[0].split(maxsplit=4)
            if not fields:
                continue
            if len(fields) < 5:
                raise UserError(f"{path} line {number}: expected VALUE RED GREEN BLUE NAME, got {line.strip()!r}")
            value, r, g, b = (_int_or_text(field) for field in fields[:4])
            classes.append(_class(path, f"line {number}", value, fields[4], (r, g, b)))
    return classes


def _read_json(path):
    try:
        with open(path) as f:
            entries = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(entries, list):
        raise UserError(f"{path}: expected a list of {{\"value\", \"name\", \"color\"}} objects")
    classes = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"value", "name", "color"} <= entry.keys():
            raise UserError(f"{path} entry {index}: expected an object with \"value\", \"name\" and \"color\"")
        classes.append(_class(path, f"entry {index}", entry["value"], entry["name"], entry["color"]))
    return classes


def read_classes(data_dir):
    """The classes file of data_dir -> (file, [(value, name, (r, g, b))] in train-id order)."""
    if data_dir is None:
        raise UserError("--dataset folder needs --data-dir: the folder holding its classes file")
    found = [os.path.join(data_dir, name) for name in CLASS_FILES if os.path.isfile(os.path.join(data_dir, name))]
    if not found:
        raise UserError(f"no classes file in {data_dir}: write classes.txt or classes.json "
                        "(a label value, colour and name for each class)")
    if len(found) > 1:
        raise UserError(f"both {found[0]} and {found[1]} exist: keep one")
    path = found[0]
    classes = _read_json(path) if path.endswith(".json") else _read_txt(path)
    if not classes:
        raise UserError(f"{path} lists no classes")
    for kind, column in (("label value", 0), ("name", 1)):
        seen = set()
        for entry in classes:
            if entry[column] in seen:
                raise UserError(f"{path}: {kind} {entry[column]!r} is listed twice")
            seen.add(entry[column])
    return path, classes


def find_samples(data_dir, split):
    """images/<split>/ with labels/<split>/ when images/<split>/ exists, else images/ with labels/."""
    image_dir, label_dir = os.path.join(data_dir, "images"), os.path.join(data_dir, "labels")
    if os.path.isdir(os.path.join(image_dir, split)):
        image_dir, label_dir = os.path.join(image_dir, split), os.path.join(label_dir, split)
    return paired_files(image_dir, label_dir, IMAGE_EXTENSIONS, ".png", with_labels=split != "test")


def describe(data_dir):
    """The folder dataset under data_dir, its classes read from its classes file."""
    path, classes = read_classes(data_dir)
    label_map = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for train_id, (value, _, _) in enumerate(classes):
        label_map[value] = train_id
    return DatasetInfo(name="folder", data_dir=data_dir, class_names=tuple(name for _, name, _ in classes),
                       palette=np.array([color for _, _, color in classes], dtype=np.uint8), label_map=label_map,
                       crop_size=(512, 512), find_samples=lambda split: find_samples(data_dir, split),
                       unlisted_source=os.path.basename(path))
