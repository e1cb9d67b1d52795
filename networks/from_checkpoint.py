"""A segmentation network rebuilt from a checkpoint file, with the settings the file holds.

Where the file says it, it decides: train.py's training state (``last.pth``) stores its arguments,
so model, num_classes, recurrence, norm, depth and dataset come from them. Our snapshots
(``CS_scenes_<iter>.pth``) and the official ones are bare state dicts, and mmsegmentation's files are
``{"meta", "state_dict", ...}``: num_classes is read from the shape of the last classifier weight,
the layout from the keys (networks.norms: upstream's "syncbn", the official "inplace-abn",
mmsegmentation's "mmseg"), the depth from the number of layer3 blocks (6: ResNet-50, 23: ResNet-101).
An mmsegmentation file's meta tells the dataset, the recurrence and how the logits are resized (its
config's ``align_corners``); without it the class count picks the dataset (19: cityscapes, 21: voc,
150: ade20k). Otherwise model and recurrence leave no trace in the weights (the attention's weights are
shared by all its passes), so they come from the caller or the defaults (ccnet, recurrence 2); in
mmsegmentation's layout the recurrence defaults to 2, its CCHead's, whatever the caller's defaults (so a
fine-tuned zoo model's bare snapshot runs as trained). A value the caller gives always wins over the file's.
"""
import re

from networks import DEPTHS, DESCRIPTIONS, build_model, layout_of, single_device_norm_layer
from networks.mmseg_ccnet import backbone_keys
from utils.checkpoint import load_model, read_checkpoint, state_dict_of
from utils.cli import positive_int, str2bool
from utils.errors import UserError

DEFAULTS = {"model": "ccnet", "recurrence": 2, "norm": "syncbn", "depth": 101}
# A layout's own defaults, over the caller's: mmsegmentation's CCHead runs its attention twice unless its
# config says otherwise, where upstream's scripts default to 1 (evaluate.py) and 0 (train.py).
LAYOUT_DEFAULTS = {"mmseg": {"recurrence": 2}}
SETTINGS = ("model", "num_classes", "recurrence", "norm", "depth", "dataset", "align_corners")
# The dataset each class count means when nothing else tells it.
DATASET_OF_CLASSES = {19: "cityscapes", 21: "voc", 150: "ade20k"}
# mmsegmentation's dataset types (the ``dataset_type`` of its configs) as our dataset names.
MMSEG_DATASETS = {"CityscapesDataset": "cityscapes", "PascalVOCDataset": "voc", "ADE20KDataset": "ade20k"}
# mmsegmentation's decode-head classifier (ours and the official's is the last 4-d weight of the DSN head).
MMSEG_CLASSIFIER = "decode_head.conv_seg.weight"


def add_checkpoint_arguments(parser):
    """--restore-from and the --model, --num-classes, --recurrence, --align-corners flags that
    build_from_checkpoint takes."""
    parser.add_argument("--restore-from", required=True,
                        help="checkpoint: a CS_scenes_<iter>.pth snapshot, last.pth, an official CCNet or an "
                             "mmsegmentation CCNet file")
    parser.add_argument("--model", default=None, help="network name when the checkpoint does not say (default ccnet)")
    parser.add_argument("--num-classes", type=positive_int, default=None,
                        help="classes, when the checkpoint does not say (default: read from its classifier)")
    parser.add_argument("--recurrence", type=positive_int, default=None,
                        help="criss-cross attention passes, when the checkpoint does not say (default 2)")
    add_align_corners_argument(parser)


def add_align_corners_argument(parser):
    """--align-corners: how the logits are resized to the image, when the checkpoint does not say."""
    parser.add_argument("--align-corners", type=str2bool, nargs="?", const=True, default=None,
                        help="resize the logits to the image with corners aligned (default: the checkpoint's "
                             "mmsegmentation config says; else true, false for mmsegmentation's layout)")


def depth_of(state, source="the checkpoint"):
    """The ResNet depth of a state_dict told by its layer3 blocks (``layer3.<i>.`` or ``backbone.layer3.<i>.``);
    None without layer3 keys; a count of no known depth is a UserError naming ``source``."""
    blocks = {match.group(1) for key in state for match in [re.match(r"(?:backbone\.)?layer3\.(\d+)\.", key)] if match}
    if not blocks:
        return None
    depths = {layers[2]: depth for depth, layers in DEPTHS.items()}
    if len(blocks) not in depths:
        known = ", ".join(f"{layers[2]} (ResNet-{depth})" for depth, layers in DEPTHS.items())
        raise UserError(f"{source} holds a ResNet with {len(blocks)} blocks in layer3; known: {known}")
    return depths[len(blocks)]


def mmseg_config_settings(loaded):
    """{'dataset', 'align_corners', 'recurrence'} that an mmsegmentation checkpoint's meta tells: its config text
    (mmengine's ``cfg``, mmsegmentation 0.x's ``config``), read as text and never run, and the
    class names of its dataset meta. Absent entries are left out."""
    meta = loaded.get("meta") if isinstance(loaded, dict) else None
    if not isinstance(meta, dict):
        return {}
    text = meta.get("cfg") or meta.get("config")
    text = text if isinstance(text, str) else ""
    found = {}
    dataset = re.search(r"dataset_type\s*=\s*['\"](\w+)['\"]", text)
    if dataset and dataset.group(1) in MMSEG_DATASETS:
        found["dataset"] = MMSEG_DATASETS[dataset.group(1)]
    # The decode head's (EncoderDecoder.align_corners is the decode head's).
    corners = re.search(r"decode_head\s*=\s*dict\(.*?align_corners\s*=\s*(True|False)", text, re.S)
    if corners:
        found["align_corners"] = corners.group(1) == "True"
    recurrence = re.search(r"decode_head\s*=\s*dict\(.*?recurrence\s*=\s*(\d+)", text, re.S)
    if recurrence:
        found["recurrence"] = int(recurrence.group(1))
    return found


def checkpoint_settings(loaded, state, model=None, num_classes=None, recurrence=None, norm=None, depth=None,
                        align_corners=None, source="the checkpoint", defaults=None):
    """{setting: value} for SETTINGS of a loaded checkpoint and its state_dict: each given value, else the
    checkpoint's stored arguments, else what its tensors and meta tell (the module docstring), else
    the layout's LAYOUT_DEFAULTS, ``defaults`` (a dict) or DEFAULTS; UserError if num_classes stays unknown.
    'align_corners' None means the network's own."""
    args = loaded.get("args") if isinstance(loaded, dict) else None
    stored = {k: args[k] for k in SETTINGS if k in args} if isinstance(args, dict) else {}
    by_tensors = {"num_classes": classes_of(state), "norm": layout_of(state, source), "depth": depth_of(state, source)}
    told = {**mmseg_config_settings(loaded), **{k: v for k, v in by_tensors.items() if v}}
    given = {"model": model, "num_classes": num_classes, "recurrence": recurrence, "norm": norm, "depth": depth,
             "align_corners": align_corners}
    known = {**told, **stored, **{k: v for k, v in given.items() if v is not None}}
    fallback = {**DEFAULTS, **(defaults or {})}
    fallback.update(LAYOUT_DEFAULTS.get(known.get("norm", fallback["norm"]), {}))
    settings = {**fallback, "align_corners": None, **known}
    if "num_classes" not in settings:
        raise UserError("the checkpoint does not say how many classes it predicts; give --num-classes")
    settings["dataset"] = dataset_told(loaded, state, settings["num_classes"])
    return settings


def classes_of(state):
    """The class count of a state_dict's classifier (mmsegmentation's decode head's, or the last 4-d weight
    of the DSN head), None without one (ImageNet weights)."""
    classifier = [v for k, v in state.items() if k == MMSEG_CLASSIFIER or (k.startswith("dsn.") and v.dim() == 4)]
    return classifier[-1].shape[0] if classifier else None


def dataset_told(loaded, state, num_classes=None):
    """The dataset a loaded checkpoint and its state_dict tell, None where nothing does: a training state's
    stored --dataset, else an mmsegmentation config's, else the one the class count means
    (DATASET_OF_CLASSES; ``num_classes`` where given, else the classifier's)."""
    args = loaded.get("args") if isinstance(loaded, dict) else None
    stored = args.get("dataset") if isinstance(args, dict) else None
    return (stored or mmseg_config_settings(loaded).get("dataset")
            or DATASET_OF_CLASSES.get(num_classes or classes_of(state)))


def decode_head_modules(state):
    """The names of the modules under mmsegmentation's ``decode_head.`` in a state_dict, sorted; none for
    a backbone alone (an ImageNet ResNetV1c)."""
    return sorted({k.split(".")[1] for k in state if k.startswith("decode_head.")})


def require_known_head(state, settings, source):
    """UserError when an mmsegmentation file holds another model's decode head than CCNet's CCHead
    (a PSPNet's, a DeepLabv3's, ...), naming its keys; a file without a decode head passes."""
    modules = decode_head_modules(state)
    if settings["norm"] != "mmseg" or not modules or "decode_head.cca.query_conv.weight" in state:
        return
    shown = ", ".join(f"decode_head.{name}.*" for name in modules)
    raise UserError(f"{source} is not an mmsegmentation CCNet: its decode head holds {shown}, "
                    "without CCNet's criss-cross attention (decode_head.cca.*)")


def weights_of(path):
    """(loaded file, its state_dict in the network's key names) of a checkpoint path."""
    loaded = read_checkpoint(path)
    return loaded, backbone_keys(state_dict_of(loaded, path))


def describe(settings):
    """One line naming a network built from settings: layout, depth, classes, recurrence."""
    return (f"{settings['model']} in {DESCRIPTIONS[settings['norm']]}, ResNet-{settings['depth']}, "
            f"{settings['num_classes']} classes, recurrence {settings['recurrence']}")


def build_from_checkpoint(path, model=None, num_classes=None, recurrence=None, norm=None, depth=None,
                          align_corners=None, defaults=None):
    """The network stored in ``path`` with single-device norms, all its weights loaded, in eval mode;
    returns (network, settings).

    model, num_classes, recurrence, norm, depth, align_corners: None takes the checkpoint's value
    (checkpoint_settings; ``defaults`` where it says nothing); settings is the dict of SETTINGS used,
    'align_corners' the network's. A
    missing, unreadable or truncated file, one holding keys of two layouts or another mmsegmentation
    model, or one that does not fit the model (the keys that do not fit are named) is a UserError naming it.
    """
    loaded, state = weights_of(path)
    settings = checkpoint_settings(loaded, state, model, num_classes, recurrence, norm, depth, align_corners,
                                   source=path, defaults=defaults)
    require_known_head(state, settings, path)
    network = build_model(settings["model"], settings["num_classes"], recurrence=settings["recurrence"],
                          norm_layer=single_device_norm_layer(settings["norm"]), norm=settings["norm"],
                          depth=settings["depth"])
    if settings["align_corners"] is not None:
        network.align_corners = settings["align_corners"]
    settings["align_corners"] = network.align_corners
    load_model(network, state, strict=True, source=path)
    return network.eval(), settings
