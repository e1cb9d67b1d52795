"""A small stand-in for CCNet where the network is not the point (launchers, preemption, resume,
validation bookkeeping), and a runner that trains with it in a process of its own:

    python tests/standin.py RECORD <train.py flags>

runs train.py's main with networks.build_model building TinySegNet. Each process appends every
iteration it finishes to RECORD<rank>.steps and the name of every file it writes atomically to
RECORD<rank>.writes; with STANDIN_STEP_SECONDS set, each iteration lasts that much longer (time for a
test to signal the processes in the middle of the run), and with STANDIN_STATE_SECONDS each write of
last.pth (time in which a process that did not wait for it would exit).
"""
import os
import sys
import time

import torch.nn as nn

import networks
import train
import utils.checkpoint
from sync_batchnorm import SynchronizedBatchNorm2d
from utils.errors import exit_on_user_error


def classifier(channels, num_classes, norm_layer):
    """conv-norm-ReLU-Dropout2d(0.1)-conv, the classifier layout of CCNet's heads (classifier at .4)."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), norm_layer(channels),
                         nn.ReLU(inplace=True), nn.Dropout2d(0.1), nn.Conv2d(channels, num_classes, 1))


class TinySegNet(nn.Module):
    """(B, 3, H, W) -> [main, dsn] logits (B, K, H/4, W/4), or the criterion's loss given labels, as
    networks' models do; keyed like them where evaluate.py looks (dsn.4.weight), so that evaluate.py
    reads its snapshots. norm_layer None means SynchronizedBatchNorm2d, as for networks.build_model."""

    def __init__(self, num_classes, criterion=None, norm_layer=None, channels=8):
        super().__init__()
        norm_layer = norm_layer or SynchronizedBatchNorm2d
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 5, stride=4, padding=2, bias=False), norm_layer(channels),
                                  nn.ReLU(inplace=True))
        self.head = classifier(channels, num_classes, norm_layer)
        self.dsn = classifier(channels, num_classes, norm_layer)
        self.criterion = criterion

    def forward(self, x, labels=None):
        features = self.stem(x)  # (B, C, H/4, W/4)
        outs = [self.head(features), self.dsn(features)]  # each (B, K, H/4, W/4)
        if self.criterion is not None and labels is not None:
            return self.criterion(outs, labels)
        return outs


def build_tiny(name, num_classes, criterion=None, norm_layer=None, **ignored):
    """networks.build_model's signature, building a TinySegNet whatever the name."""
    return TinySegNet(num_classes, criterion, norm_layer)


def append_line(path, text):
    with open(path, "a") as f:
        f.write(f"{text}\n")


def main(record, argv):
    rank = os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0"))
    seconds = float(os.environ.get("STANDIN_STEP_SECONDS", "0"))
    state_seconds = float(os.environ.get("STANDIN_STATE_SECONDS", "0"))
    step, write = train.TrainLogger.step, utils.checkpoint._write_atomic

    def recorded_step(logger, iteration, loss, lr):
        append_line(f"{record}{rank}.steps", iteration)
        time.sleep(seconds)
        step(logger, iteration, loss, lr)

    def recorded_write(path, writer):
        append_line(f"{record}{rank}.writes", os.path.basename(path))
        if os.path.basename(path) == "last.pth":
            time.sleep(state_seconds)
        write(path, writer)

    networks.build_model = build_tiny
    train.TrainLogger.step = recorded_step
    utils.checkpoint._write_atomic = recorded_write
    exit_on_user_error(train.main)(train.get_args_parser().parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
