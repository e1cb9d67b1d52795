"""Write a list file for a folder in the Cityscapes layout.

    python -m dataset.make_lists --data-dir DIR --split val --out val.lst
    python -m dataset.make_lists --data-dir DIR --split train,val --out trainval.lst

Each line is ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png<TAB>gtFine/<split>/<city>/<stem>_gtFine_labelIds.png``
relative to DIR; the test split lists images only, as the official test.lst does.
"""
import os

from utils.cli import ArgumentParser, str2bool
from utils.errors import UserError, exit_on_user_error

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def list_lines(data_dir, split, with_labels):
    """Sorted list lines (paths relative to data_dir, '/'-separated) of one split."""
    image_root = os.path.join(data_dir, "leftImg8bit", split)
    if not os.path.isdir(image_root):
        raise UserError(f"no folder {image_root} (expected the Cityscapes layout leftImg8bit/<split>/<city>/)")
    lines = []
    for city in sorted(os.listdir(image_root)):
        city_dir = os.path.join(image_root, city)
        if not os.path.isdir(city_dir):
            continue
        for file_name in sorted(f for f in os.listdir(city_dir) if f.endswith(IMAGE_SUFFIX)):
            image = f"leftImg8bit/{split}/{city}/{file_name}"
            if not with_labels:
                lines.append(image)
                continue
            label = f"gtFine/{split}/{city}/{file_name[:-len(IMAGE_SUFFIX)]}{LABEL_SUFFIX}"
            if not os.path.isfile(os.path.join(data_dir, label)):
                raise UserError(f"image {image} has no label {label} in {data_dir}")
            lines.append(f"{image}\t{label}")
    if not lines:
        raise UserError(f"no *{IMAGE_SUFFIX} images under {image_root}")
    return lines


def write_list(data_dir, splits, out, with_labels=None):
    """Write the lines of the given splits to out; with_labels=None lists labels unless the split is 'test'."""
    lines = []
    for split in splits:
        labels = split != "test" if with_labels is None else with_labels
        lines += list_lines(data_dir, split, labels)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return len(lines)


def get_args_parser():
    parser = ArgumentParser(description="Write a CCNet list file for a Cityscapes-layout folder.")
    source = parser.add_argument_group("input")
    source.add_argument("--data-dir", required=True, help="folder holding leftImg8bit/ and gtFine/")
    source.add_argument("--split", default="val", help="split name, or several joined by commas (train,val)")
    source.add_argument("--labels", type=str2bool, default=None,
                        help="list label paths too (default: yes, except for the test split)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", required=True, help="list file to write")
    return parser


@exit_on_user_error
def main(args):
    count = write_list(args.data_dir, args.split.split(","), args.out, args.labels)
    print(f"wrote {count} lines to {args.out}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
