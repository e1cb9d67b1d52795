"""The model shell shared by CCNet, PSPNet and DeepLabv3: dilated ResNet-50 or -101, a head, a DSN head,
and the conv-norm-activation blocks the heads are made of."""
import torch.nn as nn

from networks.norms import make_layout
from networks.resnet import DEPTHS, ResNet
from sync_batchnorm.statistics import LocalStatistics
from utils.checkpoint import load_model


def conv_bn_relu(in_channels, out_channels, kernel_size, norm_act, dilation=1, bias=False):
    """[conv, *norm_act(out_channels)] keeping the spatial size: (B, in, H, W) -> (B, out, H, W).

    norm_act is a layout's (networks.norms): [norm, ReLU] or [InPlace-ABN with leaky ReLU].
    Returned as a list so that callers can extend the nn.Sequential it goes into while the
    checkpoint key indices (conv at .0, norm at .1) stay those of the published models.
    """
    padding = dilation * (kernel_size // 2)
    return [nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=bias),
            *norm_act(out_channels)]


def classifier(in_channels, num_classes, norm_act, bias=False):
    """3x3 conv-norm-activation to 512 channels, Dropout2d(0.1), 1x1 conv to classes:
    (B, in, H, W) -> (B, K, H, W)."""
    return nn.Sequential(*conv_bn_relu(in_channels, 512, 3, norm_act, bias=bias),
                         nn.Dropout2d(0.1),
                         nn.Conv2d(512, num_classes, kernel_size=1))


class SegmentationResNet(ResNet):
    """(B, 3, H, W) -> [head logits, DSN logits], each (B, K, h, w) at output stride 8.

    ``head`` reads layer4; the deeply supervised auxiliary head ``dsn`` reads layer3. With a
    criterion and labels, forward returns criterion([main, dsn], labels) instead, so that the
    loss runs inside each DataParallel replica. With ``memory_efficient`` the head and the DSN
    head are checkpointed segments too (the attention maps of CCNet included). The logits are resized
    to the image with corners aligned (``align_corners``, utils.inference.predict_whole), as trained.
    """

    align_corners = True

    def __init__(self, head, num_classes, layout, criterion=None, memory_efficient=False, depth=101):
        super().__init__(DEPTHS[depth], norm_layer=layout.norm, act_layer=layout.act, memory_efficient=memory_efficient)
        self.head = head
        self.dsn = classifier(1024, num_classes, layout.norm_act, bias=True)
        self.criterion = criterion

    def classifiers(self):
        """The last convolution of the head and of the DSN head (what --not-restore-last re-initialises)."""
        return [[m for m in part.modules() if isinstance(m, nn.Conv2d)][-1] for part in (self.head, self.dsn)]

    def forward(self, x, labels=None):
        c3, c4 = super().forward(x)
        outs = [self.segment(self.head, c4), self.segment(self.dsn, c3)]  # each (B, K, h, w)
        if self.criterion is not None and labels is not None:
            return self.criterion(outs, labels)
        return outs


def check_memory_efficient(layout, memory_efficient):
    """Raise ValueError when memory_efficient is asked of norm layers that cannot recompute."""
    if memory_efficient and not isinstance(layout.norm_layer(1), LocalStatistics):
        raise ValueError(f"memory_efficient needs the norm layers of sync_batchnorm (SynchronizedBatchNorm2d, "
                         f"InPlace-ABN): {layout.norm_layer.__name__} would update its running statistics "
                         "again when recomputed")


def segmentation_model(make_head, num_classes, criterion=None, pretrained_model=None, norm_layer=None,
                       norm="syncbn", memory_efficient=False, depth=101):
    """A SegmentationResNet of ``depth`` (50 or 101) in the layout ``norm`` (networks.norms) whose head is
    make_head(layout).

    norm_layer None means the layout's synchronized norm (SynchronizedBatchNorm2d or InPlaceABNSync);
    ``pretrained_model`` (a path or a state_dict, e.g. the ImageNet backbone) is loaded non-strictly.
    ``memory_efficient`` trains with checkpointed segments, which needs norm layers that keep their
    statistics under recomputation (those of sync_batchnorm: SynchronizedBatchNorm2d, InPlace-ABN).
    """
    layout = make_layout(norm, norm_layer)
    check_memory_efficient(layout, memory_efficient)
    model = SegmentationResNet(make_head(layout), num_classes, layout, criterion, memory_efficient, depth)
    if pretrained_model is not None:
        load_model(model, pretrained_model)
    return model
