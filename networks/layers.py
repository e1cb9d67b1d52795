"""Small building blocks shared by the segmentation heads."""
import torch.nn as nn


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
