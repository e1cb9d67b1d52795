"""The Pascal VOC colour map, which VOC and ADE20K draw their classes in."""
import numpy as np

__all__ = ["voc_colormap"]


def voc_colormap(count=256):
    """(count, 3) uint8 RGB: the Pascal VOC devkit's colour of each label value.

    The bits of the value are dealt out in turn to red, green and blue (bit 0 to red, bit 1 to
    green, bit 2 to blue, bit 3 to red, ...), each channel filled from its most significant bit.
    """
    values = np.arange(count)
    colors = np.zeros((count, 3), dtype=np.int64)
    for step in range(8):
        for channel in range(3):
            bit = (values >> (3 * step + channel)) & 1
            colors[:, channel] |= bit << (7 - step)
    return colors.astype(np.uint8)
