"""The layouts of CCNet, PSPNet and DeepLabv3 checkpoints, their norms, and how to tell them from the keys.

"syncbn", upstream's: BatchNorm (SynchronizedBatchNorm2d) followed by an in-place ReLU module
everywhere, so the classifiers sit at ``head.bottleneck.4`` and ``dsn.4``.
"inplace-abn", the official CCNet's (speedinghzl/CCNet with inplace-abn): in the backbone
InPlaceABNSync(C, activation="identity") followed by the same ReLUs, out of place because InPlace-ABN
keeps its output for its backward; in the heads InPlaceABNSync(C) with its leaky ReLU (slope 0.01) and
no ReLU module, so the classifiers sit at ``head.bottleneck.3`` and ``dsn.3``. Its norms compute
|γ| + ε where BatchNorm computes γ, so the two layouts give different logits from the same tensors.
"mmseg", mmsegmentation's CCNet (networks/mmseg_ccnet.py): BatchNorm and ReLU as "syncbn", in another
network (ResNetV1c, CCHead, FCN auxiliary head) under mmsegmentation's key names (``decode_head.*``).
"""
import functools

import torch.nn as nn

from sync_batchnorm import InPlaceABN, InPlaceABNSync, SynchronizedBatchNorm2d
from utils.errors import UserError

DESCRIPTIONS = {
    "syncbn": "upstream's layout (BatchNorm + ReLU, classifiers at .4)",
    "inplace-abn": "the official CCNet layout (InPlace-ABN, leaky-ReLU heads, classifiers at .3)",
    "mmseg": "mmsegmentation's layout (ResNetV1c, CCHead, FCN auxiliary head; RGB input normalized inside)",
}
NORMS = tuple(DESCRIPTIONS)


class BatchNormLayout:
    """norm_layer(C) then nn.ReLU(inplace=True), in the backbone and the heads alike."""

    name = "syncbn"
    default_norm_layer = SynchronizedBatchNorm2d
    single_device_norm_layer = nn.BatchNorm2d
    head_act_layer = functools.partial(nn.ReLU, inplace=True)  # after each head norm; None: the norm's own

    def __init__(self, norm_layer=None):
        self.norm_layer = norm_layer or self.default_norm_layer

    def norm(self, channels):
        """A backbone norm; the ReLU after it is ``act()``."""
        return self.norm_layer(channels)

    def act(self):
        """The ReLU that follows a backbone norm."""
        return nn.ReLU(inplace=True)

    def norm_act(self, channels):
        """The modules that follow a head convolution: [norm, head_act_layer()], or [norm]."""
        act = [self.head_act_layer()] if self.head_act_layer is not None else []
        return [self.norm_layer(channels), *act]


class InPlaceABNLayout(BatchNormLayout):
    """norm_layer(C, activation="identity") then an out-of-place ReLU in the backbone; norm_layer(C),
    its own leaky ReLU, in the heads."""

    name = "inplace-abn"
    default_norm_layer = InPlaceABNSync
    single_device_norm_layer = InPlaceABN
    head_act_layer = None

    def norm(self, channels):
        return self.norm_layer(channels, activation="identity")

    def act(self):
        # Out of place: the InPlace-ABN before it recovers its gradient from the output it keeps.
        return nn.ReLU(inplace=False)


class MMSegLayout(BatchNormLayout):
    """BatchNorm then nn.ReLU(inplace=True), as "syncbn", for mmsegmentation's network."""

    name = "mmseg"


LAYOUTS = {layout.name: layout for layout in (BatchNormLayout, InPlaceABNLayout, MMSegLayout)}
# Keys that only a checkpoint of that layout holds: the DSN classifiers, and mmsegmentation's heads and
# stem (a zoo file's, or ``stem.0.weight`` of an ImageNet ResNetV1c backbone).
MARKERS = {"inplace-abn": ("dsn.3.weight",), "syncbn": ("dsn.4.weight",),
           "mmseg": ("decode_head.conv_seg.weight", "backbone.stem.0.weight", "stem.0.weight")}


def make_layout(norm="syncbn", norm_layer=None):
    """The layout named ``norm`` building its norms with norm_layer (None: its synchronized default)."""
    if norm not in LAYOUTS:
        raise UserError(f"unknown norm {norm!r}; known norms: {', '.join(NORMS)}")
    return LAYOUTS[norm](norm_layer)


def single_device_norm_layer(norm):
    """The unsynchronized norm layer of a layout, for one-process inference: nn.BatchNorm2d or InPlaceABN."""
    return make_layout(norm).single_device_norm_layer


def layout_of(state_dict, source="the checkpoint"):
    """The layout a model state_dict was saved from, told by its MARKERS ('dsn.3.weight' for 'inplace-abn',
    'dsn.4.weight' for 'syncbn', mmsegmentation's keys for 'mmseg'); None when it has none (e.g. the
    MIT ImageNet weights, which fit 'syncbn' and 'inplace-abn'). Keys of two layouts are a UserError
    naming them (``source`` names the file)."""
    found = {name: [key for key in keys if key in state_dict] for name, keys in MARKERS.items()}
    found = {name: keys for name, keys in found.items() if keys}
    if len(found) > 1:
        shown = "; ".join(f"{', '.join(keys)} ({name})" for name, keys in found.items())
        raise UserError(f"{source} holds the keys of {len(found)} layouts: {shown}")
    return next(iter(found), None)

