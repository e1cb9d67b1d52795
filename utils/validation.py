"""Validation during training (train.py --eval-every N): the mIoU after iterations N, 2N, ... and
the last, as evaluate.py measures it for the snapshot of that iteration, and the best snapshot so far.

The network being trained is evaluated as it is, in eval mode: its SynchronizedBatchNorm2d layers
then run nn.BatchNorm2d's forward on the running statistics, the layers evaluate.py rebuilds the
snapshot with, and the loop is evaluate.py's (utils.evaluation). Each process evaluates its share of
the images and the confusion matrices are summed; a process with several GPUs (--gpu 0,1,2,3)
splits each batch, one image per GPU, over replicas as evaluate.py does (AutocastDataParallel).

The training goes on as if nothing happened: the validation has its own DataLoader, whose worker
seed comes from its own torch.Generator, so it draws no number from python's, numpy's, torch's or
CUDA's random streams, and the network goes back to train mode. A stop request (utils.preemption)
cuts a validation short: its result is dropped and the run stops at that iteration, and the
resumed run validates that iteration before it trains. The validation after the last iteration
is not given the stop requests: no resumed run would make up for it.
"""
import os
import re
import time

import torch

from utils.checkpoint import save_atomic, save_json_atomic
from utils.cli import float_list, non_negative_int, str2bool
from utils.data_parallel import AutocastDataParallel
from utils.evaluation import InferenceSettings, class_labels, evaluate, shard_loader
from utils.metrics import ConfusionMatrix
from utils.preemption import ignore_stop_signals
from utils.runtime import all_reduce_sum

BEST_WEIGHTS, BEST_RECORD = "best.pth", "best.json"


def add_validation_arguments(group):
    """--eval-every, --eval-list, --eval-whole, --eval-scales and --eval-flip."""
    group.add_argument("--eval-every", type=non_negative_int, default=0,
                       help="evaluate the mIoU every this many iterations and at the end, keeping the best "
                            "snapshot as best.pth (0: never)")
    group.add_argument("--eval-list", default=None,
                       help="list of validation image/label pairs, relative to --data-dir (default: the "
                            "dataset's validation split; for cityscapes ./dataset/list/cityscapes/val.lst)")
    group.add_argument("--eval-whole", type=str2bool, nargs="?", const=True, default=True,
                       help="predict each image in one pass; false: by sliding window over --input-size tiles")
    group.add_argument("--eval-scales", type=float_list, default=[1.0],
                       help="comma-separated image scales whose probabilities are averaged, e.g. 0.75,1.0,1.25")
    group.add_argument("--eval-flip", type=str2bool, nargs="?", const=True, default=False,
                       help="also predict the mirrored images and average")


class Validation:
    """Evaluates the network every --eval-every iterations on `dataset` (None when --eval-every is 0)
    and keeps the best: ``best`` is {"iteration", "mIoU", "IU_array", "settings"} or None."""

    def __init__(self, dataset, class_names, args, runtime):
        self.every, self.num_steps, self.folder = args.eval_every, args.num_steps, args.snapshot_dir
        self.num_classes, self.ignore_label = args.num_classes, args.ignore_label
        # Tensorboard tags hold letters, digits and "_-./" only: "traffic light" is logged as traffic_light.
        self.tags = ["val/IoU/" + re.sub(r"[^-\w.]", "_", name)
                     for name in class_labels(class_names, args.num_classes)]
        self.settings = InferenceSettings(None if args.eval_whole else tuple(args.input_size),
                                          tuple(args.eval_scales), args.eval_flip, amp=args.amp,
                                          channels_last=args.channels_last)
        # What makes two mIoUs comparable: a best measured otherwise is not kept on --resume.
        self.described = {"list": args.eval_list, "tile": self.settings.tile_size, "scales": self.settings.scales,
                          "flip": self.settings.flip}
        self.runtime, self.loader, self.count = runtime, None, 0
        if dataset is not None:
            self.count = len(dataset)
            self.loader = shard_loader(dataset, runtime, max(1, len(runtime.gpu_ids)), args.num_workers,
                                       generator=torch.Generator().manual_seed(0), worker_init_fn=ignore_stop_signals)
        self.best = None

    def due(self, iteration):
        """Whether the network is evaluated after `iteration` iterations."""
        return self.every > 0 and (iteration % self.every == 0 or iteration == self.num_steps)

    def restore(self, best):
        """Take the best so far from a resumed training state; one measured with other validation
        settings is dropped, and a line says so."""
        if best is not None and self.every and best["settings"] != self.described:
            if self.runtime.is_main:
                print(f"--resume: the best so far (mIoU {100 * best['mIoU']:.2f} at iteration {best['iteration']}) "
                      f"was measured with other validation settings: the next validation replaces best.pth")
            best = None
        self.best = best

    def run(self, net, iteration, logger, stop_requests):
        """Evaluate `net` after `iteration` iterations, log the scores and keep the best; every process
        takes part. Returns True when a request of `stop_requests` (a utils.preemption.StopRequests; None:
        the validation runs in full) cut the validation short: then nothing is kept."""
        interrupted = None if stop_requests is None else stop_requests.requested
        start = time.perf_counter()
        gpu_ids = self.runtime.gpu_ids
        model = AutocastDataParallel(net, device_ids=gpu_ids) if len(gpu_ids) > 1 else net
        confmat = ConfusionMatrix(self.num_classes, self.ignore_label, self.runtime.device)
        training = net.training
        net.eval()
        try:
            evaluate(model, self.loader, self.settings, confmat, interrupted=interrupted)
        finally:
            net.train(training)
        if stop_requests is not None and stop_requests.agree(all_reduce_sum(stop_requests.flags(self.runtime.device))):
            logger.message(f"iteration {iteration}: validation cut short by a stop request")
            return True
        confmat.all_reduce()
        mean_iou = confmat.mean_iou()
        if mean_iou is not None and (self.best is None or mean_iou > self.best["mIoU"]):
            self.best = {"iteration": iteration, "mIoU": mean_iou, "IU_array": confmat.iou(),
                         "settings": self.described}
            if self.runtime.is_main:
                self.save_best(net)
        self.log(confmat, iteration, time.perf_counter() - start, logger)
        return False

    def save_best(self, net):
        """Write best.pth (the weights, as CS_scenes_<iter>.pth) and best.json (iteration, mIoU, IU_array)."""
        save_atomic(net.state_dict(), os.path.join(self.folder, BEST_WEIGHTS))
        record = {key: self.best[key] for key in ("iteration", "mIoU", "IU_array")}
        save_json_atomic(record, os.path.join(self.folder, BEST_RECORD))

    def log(self, confmat, iteration, seconds, logger):
        """val/mIoU, val/pixel_accuracy and val/IoU/<class> to tensorboard, and one line."""
        mean_iou, accuracy = confmat.mean_iou(), confmat.pixel_accuracy()
        if mean_iou is None:
            logger.message(f"iteration {iteration}: the validation images hold no labelled pixel")
            return
        scores = {"val/mIoU": mean_iou, "val/pixel_accuracy": accuracy}
        scores.update({tag: iou for tag, iou in zip(self.tags, confmat.iou()) if iou is not None})
        logger.scalars(iteration, scores)
        logger.message(f"iteration {iteration}: val mIoU {100 * mean_iou:.2f}, pixel accuracy {100 * accuracy:.2f} "
                       f"({self.count} images, {seconds:.1f} s); best mIoU "
                       f"{100 * self.best['mIoU']:.2f} at iteration {self.best['iteration']}")
