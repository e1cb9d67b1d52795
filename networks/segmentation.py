"""The model shell shared by CCNet, PSPNet and DeepLabv3: dilated ResNet-101, a head, a DSN head."""
import torch.nn as nn

from networks.layers import classifier
from networks.resnet import ResNet
from sync_batchnorm import SynchronizedBatchNorm2d
from utils.checkpoint import load_model


class SegmentationResNet(ResNet):
    """(B, 3, H, W) -> [head logits, DSN logits], each (B, K, h, w) at output stride 8.

    ``head`` reads layer4; the deeply supervised auxiliary head ``dsn`` reads layer3. With a
    criterion and labels, forward returns criterion([main, dsn], labels) instead, so that the
    loss runs inside each DataParallel replica.
    """

    def __init__(self, head, num_classes, criterion=None, norm_layer=nn.BatchNorm2d):
        super().__init__(norm_layer=norm_layer)
        self.head = head
        self.dsn = classifier(1024, num_classes, norm_layer, bias=True)
        self.criterion = criterion

    def forward(self, x, labels=None):
        c3, c4 = super().forward(x)
        outs = [self.head(c4), self.dsn(c3)]  # each (B, K, h, w)
        if self.criterion is not None and labels is not None:
            return self.criterion(outs, labels)
        return outs


def segmentation_model(make_head, num_classes, criterion=None, pretrained_model=None, norm_layer=None):
    """A SegmentationResNet whose head is make_head(norm_layer).

    norm_layer None means SynchronizedBatchNorm2d; ``pretrained_model`` (a path or a state_dict,
    e.g. the ImageNet backbone) is loaded non-strictly.
    """
    norm_layer = norm_layer or SynchronizedBatchNorm2d
    model = SegmentationResNet(make_head(norm_layer), num_classes, criterion, norm_layer)
    if pretrained_model is not None:
        load_model(model, pretrained_model)
    return model
