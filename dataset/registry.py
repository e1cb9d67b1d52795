"""The datasets train.py, evaluate.py and predict.py know by name (--dataset).

    info = get_dataset("voc", data_dir)          # DatasetInfo: class_names, palette, num_classes, ...
    train_set = info.train_set(list_path_or_None, crop_size=..., mean=IMG_MEAN, scale=..., mirror=...)
    val_set = info.val_set(list_path_or_None, mean=IMG_MEAN)
    test_set = info.test_set(list_path_or_None, mean=IMG_MEAN)
"""
from dataset import ade20k, cityscapes, folder, voc
from utils.errors import UserError

DATASETS = {"cityscapes": cityscapes.describe, "voc": voc.describe, "ade20k": ade20k.describe,
            "folder": folder.describe}
DATASET_NAMES = tuple(DATASETS)


def get_dataset(name, data_dir):
    """The DatasetInfo of dataset `name` under data_dir; an unknown name is a UserError naming it."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}: choose from {', '.join(DATASET_NAMES)}")
    return DATASETS[name](data_dir)


def add_dataset_argument(parser, told="the checkpoint's (a training state's, its mmsegmentation meta or its class "
                                      "count), else cityscapes"):
    """--dataset NAME, default None: the dataset a checkpoint tells, which ``told`` says for the help."""
    parser.add_argument("--dataset", default=None, choices=DATASET_NAMES,
                        help=f"dataset layout, classes and colours (default: {told})")


def fill_defaults(args, info):
    """Set the flags left unset (None) to the dataset's: --num-classes, --input-size."""
    if args.num_classes is None:
        args.num_classes = info.num_classes
    if args.input_size is None:
        args.input_size = info.crop_size
