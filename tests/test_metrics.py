"""ConfusionMatrix: counts, IoU with absent classes as null, per-class and pixel accuracy, all-reduce over processes."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from utils.metrics import ConfusionMatrix


def brute_force_counts(prediction, label, num_classes, ignore_index):
    """matrix[i][j] = number of pixels labelled i predicted j, one pixel at a time."""
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for p, t in zip(prediction.flatten().tolist(), label.flatten().tolist()):
        if t != ignore_index:
            matrix[t][p] += 1
    return matrix


def test_confusion_matrix_equals_brute_force_count():
    g = torch.Generator().manual_seed(0)
    confmat = ConfusionMatrix(5, ignore_index=255)
    expected = [[0] * 5 for _ in range(5)]
    for _ in range(3):
        label = torch.randint(0, 5, (2, 7, 9), generator=g)
        label[torch.rand(label.shape, generator=g) < 0.2] = 255
        prediction = torch.randint(0, 5, (2, 7, 9), generator=g)
        confmat.update(prediction, label)
        batch = brute_force_counts(prediction, label, 5, 255)
        expected = [[a + b for a, b in zip(r, s)] for r, s in zip(expected, batch)]
    assert confmat.matrix.tolist() == expected


def test_iou_is_null_for_a_class_in_neither_labels_nor_predictions():
    label = torch.tensor([[0, 0, 1, 1, 255, 3]])
    prediction = torch.tensor([[0, 1, 1, 1, 2, 0]])
    confmat = ConfusionMatrix(4)
    confmat.update(prediction, label)
    # class 0: tp 1, union 3; class 1: tp 2, union 3; class 2 only predicted on an ignored pixel;
    # class 3: labelled once, never predicted
    assert confmat.iou() == [1 / 3, 2 / 3, None, 0.0]
    assert confmat.mean_iou() == pytest.approx((1 / 3 + 2 / 3 + 0.0) / 3, abs=1e-15)
    assert confmat.pixel_accuracy() == 3 / 5


def test_class_accuracy_is_the_recall_and_null_for_a_class_never_labelled():
    label = torch.tensor([[0, 0, 1, 1, 255, 3]])
    prediction = torch.tensor([[0, 1, 1, 1, 2, 0]])
    confmat = ConfusionMatrix(4)
    confmat.update(prediction, label)
    # class 0: 1 of its 2 pixels right; class 1: 2 of 2; class 2 never labelled; class 3: 0 of 1
    assert confmat.class_accuracy() == [0.5, 1.0, None, 0.0]
    assert confmat.mean_accuracy() == 0.5
    fractions = confmat.row_fractions()
    assert torch.equal(fractions[[0, 1, 3]], torch.tensor([[0.5, 0.5, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]],
                                                          dtype=torch.float64))
    assert fractions[2].isnan().all()


def test_scores_are_null_before_any_pixel():
    confmat = ConfusionMatrix(3)
    confmat.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 255))
    assert confmat.iou() == [None, None, None]
    assert confmat.mean_iou() is None
    assert confmat.class_accuracy() == [None, None, None]
    assert confmat.mean_accuracy() is None
    assert confmat.pixel_accuracy() is None


def test_update_rejects_labels_outside_the_classes():
    confmat = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="label values"):
        confmat.update(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[1, 7]]))


def test_update_accepts_float_labels_as_datasets_return_them():
    confmat = ConfusionMatrix(3)
    confmat.update(torch.tensor([[2, 0]]), torch.tensor([[2.0, 255.0]]))
    assert confmat.matrix[2, 2] == 1 and int(confmat.matrix.sum()) == 1


def _reduce_worker(rank, world_size, init_file, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    confmat = ConfusionMatrix(3)
    confmat.update(torch.full((1, rank + 1), rank), torch.full((1, rank + 1), rank))
    confmat.all_reduce()
    results[rank] = confmat.matrix.tolist()
    dist.destroy_process_group()


def test_all_reduce_sums_the_matrices_of_all_processes(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_reduce_worker, args=(2, os.path.join(tmp_path, "init"), results), nprocs=2)
    expected = [[1, 0, 0], [0, 2, 0], [0, 0, 0]]
    assert results[0] == expected and results[1] == expected
