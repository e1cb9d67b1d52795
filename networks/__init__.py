"""Segmentation models by name: ``build_model("ccnet", 19, ...)``."""
from networks import ccnet, deeplabv3, pspnet
from networks.norms import DESCRIPTIONS, NORMS, layout_of, single_device_norm_layer
from utils.errors import UserError

__all__ = ["MODELS", "DESCRIPTIONS", "NORMS", "build_model", "layout_of", "single_device_norm_layer"]

MODELS = {
    "ccnet": ccnet.Seg_Model,
    "pspnet": pspnet.Seg_Model,
    "deeplabv3": deeplabv3.Seg_Model,
}


def build_model(name, num_classes, criterion=None, pretrained_model=None, recurrence=0, norm_layer=None,
                norm="syncbn", memory_efficient=False):
    """The model registered as ``name`` in the layout ``norm`` (networks.norms: "syncbn", upstream's,
    or "inplace-abn", the official CCNet's); norm_layer None means the layout's synchronized norm.

    pretrained_model: a checkpoint path or a state_dict loaded non-strictly (ImageNet weights);
    recurrence: how many times CCNet applies its criss-cross attention (ignored by the others);
    memory_efficient: training recomputes activations in backward instead of keeping them, with
    the same loss, gradients and BatchNorm statistics (sync_batchnorm.recompute).
    """
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes, criterion=criterion, pretrained_model=pretrained_model,
                        recurrence=recurrence, norm_layer=norm_layer, norm=norm,
                        memory_efficient=memory_efficient)
