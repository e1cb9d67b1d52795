"""Segmentation models by name: ``build_model("ccnet", 19, ...)``."""
from networks import ccnet, deeplabv3, mmseg_ccnet, pspnet
from networks.norms import DESCRIPTIONS, NORMS, layout_of, single_device_norm_layer
from networks.resnet import DEPTHS
from utils.errors import UserError

__all__ = ["MODELS", "DEPTHS", "DESCRIPTIONS", "NORMS", "build_model", "layout_of", "single_device_norm_layer"]

MODELS = {
    "ccnet": ccnet.Seg_Model,
    "pspnet": pspnet.Seg_Model,
    "deeplabv3": deeplabv3.Seg_Model,
}
# The models each layout builds: mmsegmentation's layout is that of its CCNet only.
LAYOUT_MODELS = {"syncbn": MODELS, "inplace-abn": MODELS, "mmseg": {"ccnet": mmseg_ccnet.Seg_Model}}


def build_model(name, num_classes, criterion=None, pretrained_model=None, recurrence=0, norm_layer=None,
                norm="syncbn", memory_efficient=False, depth=101):
    """The model registered as ``name`` in the layout ``norm`` (networks.norms: "syncbn", upstream's,
    "inplace-abn", the official CCNet's, or "mmseg", mmsegmentation's CCNet) on a ResNet of ``depth``
    (50 or 101); norm_layer None means the layout's synchronized norm.

    pretrained_model: a checkpoint path or a state_dict loaded non-strictly (ImageNet weights);
    recurrence: how many times CCNet applies its criss-cross attention (ignored by the others);
    memory_efficient: training recomputes activations in backward instead of keeping them, with
    the same loss, gradients and BatchNorm statistics (sync_batchnorm.recompute).
    """
    if norm not in LAYOUT_MODELS:
        raise UserError(f"unknown norm {norm!r}; known norms: {', '.join(NORMS)}")
    models = LAYOUT_MODELS[norm]
    if name not in models:
        raise UserError(f"unknown model {name!r} in the {norm} layout; known models: {', '.join(sorted(models))}")
    if depth not in DEPTHS:
        raise UserError(f"unknown depth {depth!r}; known depths: {', '.join(map(str, DEPTHS))}")
    return models[name](num_classes, criterion=criterion, pretrained_model=pretrained_model,
                        recurrence=recurrence, norm_layer=norm_layer, norm=norm,
                        memory_efficient=memory_efficient, depth=depth)
