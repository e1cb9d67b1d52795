"""The model shell shared by CCNet, PSPNet and DeepLabv3: dilated ResNet-101, a head, a DSN head,
and the conv-norm-ReLU blocks the heads are made of."""
import torch.nn as nn

from networks.resnet import ResNet
from sync_batchnorm import SynchronizedBatchNorm2d
from utils.checkpoint import load_model


def conv_bn_relu(in_channels, out_channels, kernel_size, norm_layer, dilation=1, bias=False):
    """[conv, norm, ReLU] keeping the spatial size: (B, in, H, W) -> (B, out, H, W).

    Returned as a list so that callers can extend the nn.Sequential it goes into while the
    checkpoint key indices (conv at .0, norm at .1) stay those of the published models.
    """
    padding = dilation * (kernel_size // 2)
    return [nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=bias),
            norm_layer(out_channels),
            nn.ReLU(inplace=True)]


def classifier(in_channels, num_classes, norm_layer, bias=False):
    """3x3 conv-norm-ReLU to 512 channels, Dropout2d(0.1), 1x1 conv to classes: (B, in, H, W) -> (B, K, H, W)."""
    return nn.Sequential(*conv_bn_relu(in_channels, 512, 3, norm_layer, bias=bias),
                         nn.Dropout2d(0.1),
                         nn.Conv2d(512, num_classes, kernel_size=1))


class SegmentationResNet(ResNet):
    """(B, 3, H, W) -> [head logits, DSN logits], each (B, K, h, w) at output stride 8.

    ``head`` reads layer4; the deeply supervised auxiliary head ``dsn`` reads layer3. With a
    criterion and labels, forward returns criterion([main, dsn], labels) instead, so that the
    loss runs inside each DataParallel replica. With ``memory_efficient`` the head and the DSN
    head are checkpointed segments too (the attention maps of CCNet included).
    """

    def __init__(self, head, num_classes, criterion=None, norm_layer=nn.BatchNorm2d, memory_efficient=False):
        super().__init__(norm_layer=norm_layer, memory_efficient=memory_efficient)
        self.head = head
        self.dsn = classifier(1024, num_classes, norm_layer, bias=True)
        self.criterion = criterion

    def forward(self, x, labels=None):
        c3, c4 = super().forward(x)
        outs = [self.segment(self.head, c4), self.segment(self.dsn, c3)]  # each (B, K, h, w)
        if self.criterion is not None and labels is not None:
            return self.criterion(outs, labels)
        return outs


def segmentation_model(make_head, num_classes, criterion=None, pretrained_model=None, norm_layer=None,
                       memory_efficient=False):
    """A SegmentationResNet whose head is make_head(norm_layer).

    norm_layer None means SynchronizedBatchNorm2d; ``pretrained_model`` (a path or a state_dict,
    e.g. the ImageNet backbone) is loaded non-strictly. ``memory_efficient`` trains with checkpointed
    segments, which needs norm layers that keep their statistics under recomputation.
    """
    norm_layer = norm_layer or SynchronizedBatchNorm2d
    if memory_efficient and not isinstance(norm_layer(1), SynchronizedBatchNorm2d):
        raise ValueError(f"memory_efficient needs SynchronizedBatchNorm2d norm layers: {type(norm_layer(1)).__name__} "
                         "would update its running statistics again when recomputed")
    model = SegmentationResNet(make_head(norm_layer), num_classes, criterion, norm_layer, memory_efficient)
    if pretrained_model is not None:
        load_model(model, pretrained_model)
    return model
