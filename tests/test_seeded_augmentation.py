"""A training sample's random augmentation depends on its place in the schedule alone: not on the
loader worker that reads it, nor on where a (resumed) run started."""
import random

import torch
from torch.utils.data import DataLoader, DistributedSampler

from dataset.seeded import SeededAugmentation
from train import epoch_order


class Draws(torch.utils.data.Dataset):
    """Sample i is (i, three draws of Python's random), as an augmentation would draw them."""

    def __len__(self):
        return 10

    def __getitem__(self, index):
        return torch.tensor([index, random.random(), random.random(), random.random()], dtype=torch.float64)


def load(keys, workers):
    loader = DataLoader(SeededAugmentation(Draws()), batch_size=2, sampler=keys, num_workers=workers)
    return torch.cat(list(loader))


def test_a_sample_draws_the_same_in_any_worker_and_any_order():
    keys = [(i, 1000 + 7 * i) for i in range(10)]
    in_process = load(keys, workers=0)
    assert torch.equal(load(keys, workers=2), in_process)
    assert torch.equal(load(keys[::-1], workers=1), in_process.flip(0))
    assert len(set(in_process[:, 1].tolist())) == 10


def test_a_sample_leaves_the_callers_random_stream_alone():
    random.seed(5)
    expected = [random.random() for _ in range(3)]
    random.seed(5)
    SeededAugmentation(Draws())[(3, 42)]
    assert [random.random() for _ in range(3)] == expected


def test_epoch_order_from_any_iteration_is_the_tail_of_the_whole_order():
    """10 samples on rank 1 of 2, batch 2: 2 batches an epoch, 7 iterations over 4 epochs."""
    sampler = DistributedSampler(range(10), num_replicas=2, rank=1, shuffle=True, seed=3)
    whole = list(epoch_order(sampler, 2, 2, 0, 7, seed=3))
    assert len(whole) == 14 and len({seed for _, seed in whole}) == 14
    for start in range(1, 7):
        assert list(epoch_order(sampler, 2, 2, start, 7, seed=3)) == whole[2 * start:]
    epoch_1 = [index for index, _ in whole[4:8]]
    sampler.set_epoch(1)
    assert epoch_1 == list(sampler)[:4]
