"""The evaluation loop of evaluate.py and of train.py's validation: each process predicts its share
of a split's images and counts them into a confusion matrix (summed over the processes by the caller).

Prediction is utils.inference.predict (whole images or sliding windows, scales, flip) with the
settings of an InferenceSettings, so that a validation during training computes what evaluate.py
computes for the snapshot of that iteration.
"""
import itertools
import sys
from dataclasses import dataclass
from typing import Optional

import torch
from torch.utils.data import DataLoader, Subset, default_collate
from tqdm import tqdm

from utils.inference import predict
from utils.runtime import autocast, memory_format


@dataclass(frozen=True)
class InferenceSettings:
    """How each image is predicted (utils.inference.predict): tile_size None for the whole image in one
    pass, else the (h, w) of the sliding window; the scales and mirroring whose probabilities are
    averaged; rescale, the (long, short) bounds the images are first resized to (None: not resized);
    amp autocast; channels_last images."""
    tile_size: Optional[tuple] = None
    scales: tuple = (1.0,)
    flip: bool = False
    rescale: Optional[tuple] = None
    amp: bool = False
    channels_last: bool = False


def collate_by_size(samples):
    """The samples of one loaded batch as a list of batches, one per image size (in the order the sizes
    first come): images of different sizes (VOC's, ADE20K's) cannot be stacked into one tensor."""
    groups = {}
    for sample in samples:
        groups.setdefault(tuple(sample[0].shape), []).append(sample)
    return [default_collate(group) for group in groups.values()]


def shard_loader(dataset, runtime, batch_size, num_workers, generator=None, worker_init_fn=None):
    """DataLoader over this process's share of `dataset`, in order: images rank, rank + world_size, ...;
    each of its items is a list of batches of one image size (collate_by_size).

    `generator` gives the loader's worker seed (by default it is drawn from torch's global stream).
    """
    shard = Subset(dataset, range(runtime.rank, len(dataset), runtime.world_size))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=collate_by_size, pin_memory=runtime.device.type == "cuda", generator=generator,
                      worker_init_fn=worker_init_fn)


def class_labels(class_names, num_classes):
    """The dataset's class names when the model predicts as many classes, else 'class 0', 'class 1', ..."""
    return list(class_names) if num_classes == len(class_names) else [f"class {i}" for i in range(num_classes)]


@torch.no_grad()
def evaluate(model, loader, settings, confmat=None, on_predictions=None, show_progress=False, interrupted=None):
    """Predict every image of the loader (a shard_loader) with `model` as it is (the caller puts it in
    eval mode), one forward pass per batch of one image size.

    Batches are (images, labels, size, names) when `confmat` (a utils.metrics.ConfusionMatrix) is
    given and counts them, else unlabelled (images, size, names). Images go to the device and dtype
    of the model's weights. on_predictions(train ids (N, H, W) uint8 numpy, names) receives every
    batch's predictions. The loop ends early once interrupted(), asked before each batch, is true.
    Returns confmat.
    """
    weight = next(model.parameters())
    bar = tqdm(total=len(loader.dataset), unit="img", file=sys.stdout,
               disable=not (show_progress and sys.stdout.isatty()))
    for batch in itertools.chain.from_iterable(loader):
        if interrupted is not None and interrupted():
            break
        images, names = batch[0], batch[-1]
        images = images.to(weight.device, weight.dtype, non_blocking=True,
                           memory_format=memory_format(settings.channels_last))  # (N, 3, H, W)
        with autocast(weight.device, settings.amp):
            probs = predict(model, images, settings.tile_size, settings.scales, settings.flip,
                            settings.rescale)  # (N, K, H, W)
        predictions = probs.argmax(1)  # (N, H, W)
        if confmat is not None:
            confmat.update(predictions, batch[1])
        if on_predictions is not None:
            on_predictions(predictions.to(torch.uint8).cpu().numpy(), names)
        bar.update(len(names))
    bar.close()
    return confmat
