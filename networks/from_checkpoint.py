"""A segmentation network rebuilt from a checkpoint file, with the settings the file holds.

Where the file says it, it decides: train.py's training state (``last.pth``) stores its arguments,
so model, num_classes and recurrence come from them. Our snapshots (``CS_scenes_<iter>.pth``) and
the official ones are bare state dicts: num_classes is read from the shape of the DSN classifier's
last weight (every model here has that head), while model and recurrence leave no trace in the
weights (the attention's weights are shared by all its passes), so they come from the caller or
the defaults (ccnet, recurrence 2). The normalization layout is told by the keys (networks.norms:
upstream's "syncbn" or the official "inplace-abn"). A value the caller gives always wins over the file's.
"""
from networks import build_model, layout_of, single_device_norm_layer
from utils.checkpoint import load_model, read_checkpoint, state_dict_of
from utils.cli import positive_int
from utils.errors import UserError

DEFAULTS = {"model": "ccnet", "recurrence": 2, "norm": "syncbn"}
SETTINGS = ("model", "num_classes", "recurrence", "norm")


def add_checkpoint_arguments(parser):
    """--restore-from and the --model, --num-classes, --recurrence flags that build_from_checkpoint takes."""
    parser.add_argument("--restore-from", required=True, help="checkpoint: a CS_scenes_<iter>.pth snapshot or last.pth")
    parser.add_argument("--model", default=None, help="network name when the checkpoint does not say (default ccnet)")
    parser.add_argument("--num-classes", type=positive_int, default=None,
                        help="classes, when the checkpoint does not say (default: read from its classifier)")
    parser.add_argument("--recurrence", type=positive_int, default=None,
                        help="criss-cross attention passes, when the checkpoint does not say (default 2)")


def checkpoint_settings(loaded, state, model=None, num_classes=None, recurrence=None, norm=None):
    """{'model', 'num_classes', 'recurrence', 'norm'} for a loaded checkpoint and its state_dict: each
    given value, else the checkpoint's stored arguments, else (num_classes) the output channels of its
    last 4-d DSN weight (the 1x1 classifier) and (norm) the layout its keys show, else the default;
    UserError if num_classes stays unknown."""
    args = loaded.get("args") if isinstance(loaded, dict) else None
    stored = {k: args[k] for k in SETTINGS if k in args} if isinstance(args, dict) else {}
    classifier = [v for k, v in state.items() if k.startswith("dsn.") and v.dim() == 4]
    if "num_classes" not in stored and classifier:
        stored["num_classes"] = classifier[-1].shape[0]
    if "norm" not in stored and layout_of(state):
        stored["norm"] = layout_of(state)
    given = {"model": model, "num_classes": num_classes, "recurrence": recurrence, "norm": norm}
    settings = {**DEFAULTS, **stored, **{k: v for k, v in given.items() if v is not None}}
    if "num_classes" not in settings:
        raise UserError("the checkpoint does not say how many classes it predicts; give --num-classes")
    return settings


def build_from_checkpoint(path, model=None, num_classes=None, recurrence=None, norm=None):
    """The network stored in ``path`` with single-device norms, all its weights loaded, in eval mode;
    returns (network, settings).

    model, num_classes, recurrence, norm: None takes the checkpoint's value (checkpoint_settings);
    settings is the dict of the four values used. A missing or unreadable file, or one that does
    not fit the model (in either layout: the keys that do not fit are named), is a UserError naming it.
    """
    loaded = read_checkpoint(path)
    state = state_dict_of(loaded, path)
    settings = checkpoint_settings(loaded, state, model, num_classes, recurrence, norm)
    network = build_model(settings["model"], settings["num_classes"], recurrence=settings["recurrence"],
                          norm_layer=single_device_norm_layer(settings["norm"]), norm=settings["norm"])
    load_model(network, state, strict=True, source=path)
    return network.eval(), settings
