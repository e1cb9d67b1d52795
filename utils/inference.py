"""Dense prediction of a segmentation network over full images: whole, sliding window, scales, flip.

The network takes (N, 3, h, w) images and returns logits at a reduced resolution, or a list whose
first entry is the main logits (as CCNet returns [main, deep-supervision]). Its ``align_corners``
attribute (True where it has none) says how its logits are resized to an image. Everything here runs
on the device of the images, a batch of images at a time; logits and probabilities are float32.
"""
import torch.nn.functional as F

from utils.cli import float_list, size_pair, str2bool


def add_inference_arguments(parser, tile_default):
    """--input-size (the sliding-window tile; tile_default says what None means), --rescale, --scales and --flip."""
    parser.add_argument("--input-size", type=size_pair, default=None,
                        help=f"sliding-window tile as HEIGHT,WIDTH (default: {tile_default})")
    parser.add_argument("--rescale", type=size_pair, default=None, metavar="LONG,SHORT",
                        help="first resize each image, keeping its aspect ratio, to the largest size whose long and "
                             "short sides fit LONG and SHORT, as mmsegmentation's test-time Resize(scale=(LONG, "
                             "SHORT), keep_ratio=True) does; the logits are resized back (default: no resize)")
    parser.add_argument("--scales", type=float_list, default=[1.0],
                        help="comma-separated image scales whose probabilities are averaged, e.g. 0.75,1.0,1.25")
    parser.add_argument("--flip", type=str2bool, nargs="?", const=True, default=False,
                        help="also predict the mirrored images and average")


def aligns_corners(model):
    """How the model's logits are resized to an image: its ``align_corners`` (a DataParallel's module's)."""
    return getattr(getattr(model, "module", model), "align_corners", True)


def predict_whole(model, images):
    """Float32 logits (N, K, H, W) from one pass of images (N, 3, H, W), upsampled bilinearly to (H, W)
    with the model's align_corners.

    Float32 so that sliding-window sums and the softmax keep their precision under autocast.
    """
    out = model(images)
    if isinstance(out, (list, tuple)):
        out = out[0]
    return F.interpolate(out.float(), size=images.shape[-2:], mode="bilinear", align_corners=aligns_corners(model))


def rescaled_size(height, width, bounds):
    """(h, w) of a height x width image resized, keeping its aspect ratio, to the largest size whose long
    and short sides fit within max(bounds) and min(bounds), rounded half up as mmcv's rescale_size."""
    factor = min(max(bounds) / max(height, width), min(bounds) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def tile_starts(length, tile, stride):
    """Start offsets of tiles of size ``tile`` covering [0, length), the last one flush with the end."""
    count = max(-(-(length - tile) // stride) + 1, 1)
    return [max(min(i * stride, length - tile), 0) for i in range(count)]


def sliding_stride(tile_size):
    """Window stride for 1/3 overlap: ceil(2/3 of the tile) in each dimension."""
    return tuple(-(-2 * t // 3) for t in tile_size)


def predict_sliding(model, images, tile_size):
    """Logits (N, K, H, W) averaged over tiles of ``tile_size`` (h, w) overlapping by 1/3.

    A tile larger than the image is zero-padded at the bottom and right; where tiles overlap the
    logits are averaged.
    """
    n, _, height, width = images.shape
    tile_h, tile_w = tile_size
    stride_h, stride_w = sliding_stride(tile_size)
    total = count = None
    for y in tile_starts(height, tile_h, stride_h):
        for x in tile_starts(width, tile_w, stride_w):
            tile = images[:, :, y:y + tile_h, x:x + tile_w]  # (N, 3, <=tile_h, <=tile_w)
            h, w = tile.shape[-2:]
            padded = F.pad(tile, (0, tile_w - w, 0, tile_h - h))  # (N, 3, tile_h, tile_w)
            logits = predict_whole(model, padded)[:, :, :h, :w]  # (N, K, h, w)
            if total is None:
                total = logits.new_zeros(n, logits.shape[1], height, width)
                count = logits.new_zeros(1, 1, height, width)
            total[:, :, y:y + h, x:x + w] += logits
            count[:, :, y:y + h, x:x + w] += 1
    return total / count


def _view_probs(model, images, scale, mirrored, tile_size, rescale):
    """Class probabilities (N, K, H, W) of one view of images (N, 3, H, W): resized to ``rescale``
    (rescaled_size; None: left) and by ``scale``, mirrored if asked, predicted whole or by sliding
    window, and its logits brought back to (H, W) with the model's align_corners."""
    height, width = images.shape[-2:]
    view = images
    if rescale is not None:
        size = rescaled_size(height, width, rescale)
        size = (max(int(size[0] * scale + 0.5), 1), max(int(size[1] * scale + 0.5), 1))
        # Half-pixel centres, as the OpenCV resize of mmsegmentation's test pipeline.
        view = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    elif scale != 1.0:
        size = (max(round(height * scale), 1), max(round(width * scale), 1))
        view = F.interpolate(images, size=size, mode="bilinear", align_corners=True)
    if mirrored:
        view = view.flip(-1)
    logits = predict_whole(model, view) if tile_size is None else predict_sliding(model, view, tile_size)
    if mirrored:
        logits = logits.flip(-1)
    if logits.shape[-2:] != (height, width):
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=aligns_corners(model))
    return logits.softmax(1)


def predict(model, images, tile_size=None, scales=(1.0,), flip=False, rescale=None):
    """Class probabilities (N, K, H, W) for images (N, 3, H, W), averaged over scales and flips.

    ``rescale`` (LONG, SHORT) first resizes the images as rescaled_size says (None: not). Each scale
    resizes the images bilinearly, predicts them whole (``tile_size`` None) or by sliding
    window, and resizes the logits back to (H, W) before the softmax; ``flip`` adds the mirrored
    images, their prediction mirrored back. The largest scale runs first, while nothing is summed
    yet, and each view is added in place, so the smaller scales that follow never need more memory
    than the largest one: multi-scale evaluation costs what the largest scale alone does.
    """
    views = [(scale, mirrored) for scale in sorted(scales, reverse=True)
             for mirrored in ((False, True) if flip else (False,))]
    probs = _view_probs(model, images, *views[0], tile_size, rescale)
    for scale, mirrored in views[1:]:
        probs += _view_probs(model, images, scale, mirrored, tile_size, rescale)
    return probs.div_(len(views))
