"""The two normalization layouts of CCNet, PSPNet and DeepLabv3, and how to tell them from a checkpoint.

"syncbn", upstream's: BatchNorm (SynchronizedBatchNorm2d) followed by an in-place ReLU module
everywhere, so the classifiers sit at ``head.bottleneck.4`` and ``dsn.4``.
"inplace-abn", the official CCNet's (speedinghzl/CCNet with inplace-abn): in the backbone
InPlaceABNSync(C, activation="identity") followed by the same ReLUs, out of place because InPlace-ABN
keeps its output for its backward; in the heads InPlaceABNSync(C) with its leaky ReLU (slope 0.01) and
no ReLU module, so the classifiers sit at ``head.bottleneck.3`` and ``dsn.3``. Its norms compute
|γ| + ε where BatchNorm computes γ, so the two layouts give different logits from the same tensors.
"""
import functools

import torch.nn as nn

from sync_batchnorm import InPlaceABN, InPlaceABNSync, SynchronizedBatchNorm2d
from utils.errors import UserError

DESCRIPTIONS = {
    "syncbn": "upstream's layout (BatchNorm + ReLU, classifiers at .4)",
    "inplace-abn": "the official CCNet layout (InPlace-ABN, leaky-ReLU heads, classifiers at .3)",
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


LAYOUTS = {layout.name: layout for layout in (BatchNormLayout, InPlaceABNLayout)}


def make_layout(norm="syncbn", norm_layer=None):
    """The layout named ``norm`` building its norms with norm_layer (None: its synchronized default)."""
    if norm not in LAYOUTS:
        raise UserError(f"unknown norm {norm!r}; known norms: {', '.join(NORMS)}")
    return LAYOUTS[norm](norm_layer)


def single_device_norm_layer(norm):
    """The unsynchronized norm layer of a layout, for one-process inference: nn.BatchNorm2d or InPlaceABN."""
    return make_layout(norm).single_device_norm_layer


def layout_of(state_dict):
    """The layout a model state_dict was saved from, told by its DSN classifier ('dsn.3.weight' for
    'inplace-abn', 'dsn.4.weight' for 'syncbn'); None when it has neither (e.g. ImageNet weights)."""
    classifiers = (("inplace-abn", "dsn.3.weight"), ("syncbn", "dsn.4.weight"))
    found = [name for name, key in classifiers if key in state_dict]
    return found[0] if len(found) == 1 else None

