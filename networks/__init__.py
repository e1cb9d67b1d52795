"""Segmentation models by name: ``build_model("ccnet", 19, ...)``."""
from networks import ccnet, deeplabv3, pspnet
from utils.cli import UserError

MODELS = {
    "ccnet": ccnet.Seg_Model,
    "pspnet": pspnet.Seg_Model,
    "deeplabv3": deeplabv3.Seg_Model,
}


def build_model(name, num_classes, criterion=None, pretrained_model=None, recurrence=0, norm_layer=None,
                memory_efficient=False):
    """The model registered as ``name``; norm_layer None means SynchronizedBatchNorm2d.

    pretrained_model: a checkpoint path or a state_dict loaded non-strictly (ImageNet weights);
    recurrence: how many times CCNet applies its criss-cross attention (ignored by the others);
    memory_efficient: training recomputes activations in backward instead of keeping them, with
    the same loss, gradients and BatchNorm statistics (sync_batchnorm.recompute).
    """
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes, criterion=criterion, pretrained_model=pretrained_model,
                        recurrence=recurrence, norm_layer=norm_layer,
                        memory_efficient=memory_efficient)
