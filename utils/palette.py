"""Class ids drawn in colours: RGB arrays for pictures, palette PNGs for predictions on disk."""
import numpy as np
from PIL import Image

__all__ = ["color_label", "palette_image"]

IGNORED_INDEX = 255  # the palette index of ids outside the palette, drawn black


def color_label(label, palette):
    """(H, W) integer class ids -> (H, W, 3) uint8 RGB: class k in palette[k], any other id black.

    palette: (K, 3) uint8 RGB, one colour per class.
    """
    label = np.asarray(label)
    known = (label >= 0) & (label < len(palette))
    return np.where(known[..., None], np.asarray(palette, dtype=np.uint8)[np.where(known, label, 0)], 0).astype(np.uint8)


def palette_image(label, palette):
    """(H, W) integer class ids -> PIL 'P' image whose pixel values are the ids (255 for any id
    outside 0..K-1, drawn black) and whose palette holds palette[k] ((K, 3) uint8 RGB) at index k."""
    label = np.asarray(label)
    palette = np.asarray(palette, dtype=np.uint8)
    if len(palette) > IGNORED_INDEX:
        raise ValueError(f"a palette image holds at most {IGNORED_INDEX} classes besides ignore, got {len(palette)}")
    ids = np.where((label >= 0) & (label < len(palette)), label, IGNORED_INDEX).astype(np.uint8)
    colours = np.zeros((256, 3), dtype=np.uint8)
    colours[:len(palette)] = palette
    image = Image.fromarray(ids, mode="P")
    image.putpalette(colours.ravel().tolist())
    return image
