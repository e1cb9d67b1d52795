"""Training samples whose random augmentation is fixed by their place in the schedule."""
import random

from torch.utils import data


class SeededAugmentation(data.Dataset):
    """dataset[(index, seed)]: base[index] with Python's ``random`` (the augmentation's draws) seeded
    with ``seed`` for that one sample and restored after it.

    A sample is then the same whichever DataLoader worker reads it, in whatever order: a run resumed
    in the middle of an epoch, whose workers start afresh, reads what an uninterrupted run reads.
    """

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, key):
        index, seed = key
        state = random.getstate()
        random.seed(seed)
        try:
            return self.base[index]
        finally:
            random.setstate(state)
