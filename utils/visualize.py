"""Pictures of a prediction: colours blended over the image, and attention maps as heat maps.

Images are uint8 (H, W, 3) RGB arrays.
"""
import cv2
import numpy as np
import torch
import torch.nn.functional as F

TITLE_HEIGHT = 18  # pixels of the caption strip above each panel of a figure


def blend(image, colours, alpha):
    """(1 - alpha) * image + alpha * colours, rounded: two uint8 (H, W, 3) -> uint8 (H, W, 3)."""
    return cv2.addWeighted(image, 1.0 - alpha, colours, alpha, 0.0)


def heat_map(weights, size):
    """(h, w) non-negative weights -> uint8 (H, W, 3) RGB in the 'jet' colour map, upsampled
    bilinearly (corners aligned, as the logits are) to size (H, W) and scaled so that the map's
    largest weight is red."""
    upsampled = F.interpolate(weights[None, None].float(), size=size, mode="bilinear", align_corners=True)[0, 0]
    scaled = (255 * upsampled / upsampled.max().clamp_min(1e-12)).round().to(torch.uint8).cpu().numpy()
    return cv2.applyColorMap(scaled, cv2.COLORMAP_JET)[..., ::-1]


def mark(image, y, x):
    """A copy of image with a white ring, outlined in black, around pixel (y, x)."""
    marked = image.copy()
    radius = max(3, min(image.shape[:2]) // 40)
    cv2.circle(marked, (x, y), radius + 1, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.circle(marked, (x, y), radius, (255, 255, 255), 1, cv2.LINE_AA)
    return marked


def titled(panel, title):
    """panel (H, W, 3) under a white strip of TITLE_HEIGHT pixels holding title in black."""
    strip = np.full((TITLE_HEIGHT, panel.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(strip, title, (3, TITLE_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, panel])


def attention_figure(image, points, maps):
    """The paper's attention figure: one row per point (y, x), holding the image with the point
    marked, then maps[k] of that point (R maps of (h, w) weights) as heat maps over the dimmed image.

    image: uint8 (H, W, 3); points: [(y, x)]; maps: per point a (R, h, w) tensor. Returns uint8 RGB
    (len(points) * (H + TITLE_HEIGHT), (R + 1) * W, 3).
    """
    size = image.shape[:2]
    dimmed = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    rows = []
    for (y, x), point_maps in zip(points, maps):
        panels = [titled(mark(image, y, x), f"input, point ({y}, {x})")]
        for k, weights in enumerate(point_maps):
            where = "its row and column" if k == 0 else "every pixel"
            heat = blend(dimmed, heat_map(weights, size), 0.6)
            panels.append(titled(mark(heat, y, x), f"after pass {k + 1}: {where}"))
        rows.append(np.concatenate(panels, axis=1))
    return np.concatenate(rows)
