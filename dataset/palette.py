"""Class colours: the Pascal VOC colour map and palette PNGs of train ids."""
import numpy as np
from PIL import Image

__all__ = ["voc_colormap", "palette_image"]


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


def palette_image(train_ids, palette):
    """(H, W) integer train ids -> PIL 'P' image with class k in palette[k] ((K, 3) uint8 RGB).

    Values outside 0..K-1 (the ignore label) are written as 255, drawn black.
    """
    train_ids = np.asarray(train_ids)
    palette = np.asarray(palette, dtype=np.uint8)
    if len(palette) > 255:
        raise ValueError(f"a palette image holds at most 255 classes besides ignore, got {len(palette)}")
    known = (train_ids >= 0) & (train_ids < len(palette))
    image = Image.fromarray(np.where(known, train_ids, 255).astype(np.uint8), mode="P")
    colors = np.zeros((256, 3), dtype=np.uint8)
    colors[:len(palette)] = palette
    image.putpalette(colors.ravel().tolist())
    return image
