"""Training output: a tqdm bar on a terminal or plain log lines otherwise, and tensorboardX logs."""
import sys
import time

from tensorboardX import SummaryWriter
from tqdm import tqdm

from utils.palette import color_label


class TrainLogger:
    """Reports iterations `start`..`total` (loss, learning rate, speed) and writes tensorboardX logs.

    On a terminal, a tqdm bar; otherwise one plain line every `print_frequency` iterations and at
    the last one. Labels and predictions are drawn in `palette` ((K, 3) uint8 RGB). With
    enabled=False (ranks other than 0) every method does nothing.
    """

    def __init__(self, log_dir, start, total, print_frequency, palette, enabled=True, stream=None):
        self.enabled = enabled
        self.palette = palette
        self.total = total
        self.print_frequency = max(1, print_frequency)
        self.stream = stream or sys.stdout  # looked up now, so that a redirected stdout (pytest's capsys) is used
        if not enabled:
            return
        self.writer = SummaryWriter(log_dir)
        self.bar = None
        if self.stream.isatty():
            self.bar = tqdm(initial=start, total=total, file=self.stream, unit="it", dynamic_ncols=True)
        self.mark = (time.perf_counter(), start)

    def step(self, iteration, loss, lr):
        """Record the loss and learning rate of the step that completed `iteration` iterations."""
        if not self.enabled:
            return
        self.writer.add_scalar("loss", loss, iteration)
        self.writer.add_scalar("learning_rate", lr, iteration)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3e}", refresh=False)
            self.bar.update(1)
        elif iteration % self.print_frequency == 0 or iteration == self.total:
            now = time.perf_counter()
            seconds_per_it = (now - self.mark[0]) / max(1, iteration - self.mark[1])
            print(f"iter {iteration}/{self.total}  loss {loss:.4f}  lr {lr:.3e}  {seconds_per_it:.3f} s/it",
                  file=self.stream, flush=True)
            self.mark = (now, iteration)

    def scalars(self, iteration, values):
        """Log each {tag: number} of `values` at `iteration`."""
        if not self.enabled:
            return
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, iteration)

    def images(self, iteration, images, labels, preds):
        """Log (N, H, W, 3) uint8 RGB images with their (N, H, W) labels and predictions, coloured."""
        if not self.enabled:
            return
        for i, (image, label, pred) in enumerate(zip(images, labels, preds)):
            self.writer.add_image(f"images/{i}", image, iteration, dataformats="HWC")
            self.writer.add_image(f"labels/{i}", color_label(label, self.palette), iteration, dataformats="HWC")
            self.writer.add_image(f"preds/{i}", color_label(pred, self.palette), iteration, dataformats="HWC")

    def message(self, text):
        """Print one line without breaking the progress bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self):
        """Close the bar and flush the tensorboardX events to disk."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        self.writer.close()
