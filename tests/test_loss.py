"""OHEM cross entropy and the DSN criteria against small brute-force references."""
import math

import numpy as np
import pytest
import scipy.ndimage as nd
import torch

from utils.losses import CriterionDSN, CriterionOhemDSN, OhemCrossEntropy2d

IGNORE = 255


def _random_case(seed, b=2, c=5, h=37, w=29, ignore_fraction=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, c, (b, h, w), generator=g)
    target[torch.rand(b, h, w, generator=g) < ignore_fraction] = IGNORE
    return logits, target


def _true_class_probs(logits, target):
    """Per-pixel loop: list of (probability of the true class, -log of it) over valid pixels, and their mask."""
    prob = torch.softmax(logits, dim=1)
    b, _, h, w = logits.shape
    mask = torch.zeros(b, h, w, dtype=torch.bool)
    probs = torch.full((b, h, w), math.nan, dtype=logits.dtype)
    for n in range(b):
        for y in range(h):
            for x in range(w):
                t = int(target[n, y, x])
                if t != IGNORE:
                    mask[n, y, x] = True
                    probs[n, y, x] = prob[n, t, y, x]
    return probs, mask


def _mean_nll(logits, target, keep):
    """Mean of -log softmax(logits)[true class] over the pixels where keep is True, by a loop."""
    log_prob = torch.log_softmax(logits, dim=1)
    total, count = 0.0, 0
    for n, y, x in keep.nonzero().tolist():
        total -= float(log_prob[n, int(target[n, y, x]), y, x])
        count += 1
    return total / count


def _upstream_threshold(logits, target, thresh, min_kept, factor=8):
    """The threshold as upstream finds it: scipy zoom of the probabilities and labels, np.partition."""
    prob = torch.softmax(logits, dim=1).numpy()
    small = nd.zoom(prob, (1.0, 1.0, 1.0 / factor, 1.0 / factor), order=1)
    labels = nd.zoom(target.numpy().astype(np.float64), (1.0, 1.0 / factor, 1.0 / factor), order=0)
    labels = labels.ravel().astype(np.int64)
    per_class = np.moveaxis(small, 1, 0).reshape(small.shape[1], -1)
    valid = labels != IGNORE
    kept_min = min_kept // (factor * factor)
    if kept_min >= valid.sum():
        return 1.0
    true_prob = per_class[labels[valid], np.flatnonzero(valid)]
    if kept_min == 0:
        return thresh
    return max(thresh, np.partition(true_prob, kept_min - 1)[kept_min - 1])


@pytest.mark.parametrize("seed,thresh,min_kept", [(0, 0.7, 0), (1, 0.3, 64 * 3), (2, 0.05, 64 * 8),
                                                  (3, 0.6, 64 * 20), (4, 0.7, 100000)])
def test_ohem_matches_brute_force_reference(seed, thresh, min_kept):
    logits, target = _random_case(seed)
    threshold = _upstream_threshold(logits, target, thresh, min_kept)
    probs, valid = _true_class_probs(logits, target)
    expected = _mean_nll(logits, target, valid & (probs <= threshold))
    loss = OhemCrossEntropy2d(IGNORE, thresh, min_kept)(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_ohem_with_min_kept_zero_keeps_exactly_the_pixels_at_or_below_thresh():
    logits, target = _random_case(5)
    probs, valid = _true_class_probs(logits, target)
    keep = valid & (probs <= 0.5)
    assert 0 < keep.sum() < valid.sum()
    loss = OhemCrossEntropy2d(IGNORE, thresh=0.5, min_kept=0)(logits, target)
    assert loss.item() == pytest.approx(_mean_nll(logits, target, keep), rel=1e-9)


def test_ohem_with_min_kept_above_valid_count_keeps_every_valid_pixel():
    logits, target = _random_case(6)
    _, valid = _true_class_probs(logits, target)
    loss = OhemCrossEntropy2d(IGNORE, thresh=0.0, min_kept=64 * valid.numel())(logits, target)
    assert loss.item() == pytest.approx(_mean_nll(logits, target, valid), rel=1e-9)


def test_ohem_threshold_rises_to_the_min_kept_th_smallest_probability():
    logits, target = _random_case(7, h=64, w=64)
    ohem = OhemCrossEntropy2d(IGNORE, thresh=0.0, min_kept=64 * 10)
    expected = _upstream_threshold(logits, target, 0.0, 64 * 10)
    got = ohem.threshold(torch.softmax(logits, dim=1), target)
    assert expected > 0.0
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_ohem_all_ignore_target_gives_zero_loss_that_backpropagates():
    logits = torch.randn(2, 4, 16, 16, requires_grad=True)
    target = torch.full((2, 16, 16), float(IGNORE))
    loss = OhemCrossEntropy2d(IGNORE, 0.7, 100)(logits, target)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_ohem_accepts_float_labels_and_keeps_dtype_and_device():
    logits, target = _random_case(8)
    logits = logits.float()
    loss_long = OhemCrossEntropy2d(IGNORE, 0.7, 64)(logits, target)
    loss_float = OhemCrossEntropy2d(IGNORE, 0.7, 64)(logits, target.float())
    assert loss_float.dtype == torch.float32 and loss_float.device == logits.device
    assert torch.equal(loss_long, loss_float)


def _bilinear_aligned(logits, size):
    """Bilinear upsampling with aligned corners, one output pixel at a time."""
    b, c, h, w = logits.shape
    out = torch.zeros(b, c, *size, dtype=logits.dtype)
    for y in range(size[0]):
        sy = y * (h - 1) / (size[0] - 1)
        y0 = min(int(sy), h - 2)
        for x in range(size[1]):
            sx = x * (w - 1) / (size[1] - 1)
            x0 = min(int(sx), w - 2)
            fy, fx = sy - y0, sx - x0
            out[:, :, y, x] = ((1 - fy) * (1 - fx) * logits[:, :, y0, x0] + (1 - fy) * fx * logits[:, :, y0, x0 + 1]
                               + fy * (1 - fx) * logits[:, :, y0 + 1, x0] + fy * fx * logits[:, :, y0 + 1, x0 + 1])
    return out


def test_criterion_dsn_is_main_plus_0_4_dsn_on_aligned_upsampled_logits():
    g = torch.Generator().manual_seed(9)
    main = torch.randn(2, 5, 4, 5, generator=g, dtype=torch.float64)
    dsn = torch.randn(2, 5, 3, 3, generator=g, dtype=torch.float64)
    _, target = _random_case(10, c=5, h=13, w=11)
    valid = target != IGNORE
    expected = (_mean_nll(_bilinear_aligned(main, (13, 11)), target, valid)
                + 0.4 * _mean_nll(_bilinear_aligned(dsn, (13, 11)), target, valid))
    assert CriterionDSN(IGNORE)([main, dsn], target.float()).item() == pytest.approx(expected, rel=1e-9)


def test_criterion_ohem_dsn_is_ohem_main_plus_0_4_plain_dsn():
    logits, target = _random_case(11, h=24, w=24)
    main, dsn = logits, torch.randn_like(logits)
    loss = CriterionOhemDSN(IGNORE, thresh=0.6, min_kept=64)([main, dsn], target)
    ohem = OhemCrossEntropy2d(IGNORE, 0.6, 64)(main, target)
    _, valid = _true_class_probs(dsn, target)
    assert loss.item() == pytest.approx(ohem.item() + 0.4 * _mean_nll(dsn, target, valid), rel=1e-9)


@pytest.mark.parametrize("criterion", [CriterionDSN(), CriterionOhemDSN(min_kept=10)])
def test_criteria_on_all_ignore_target_give_finite_zero_that_backpropagates(criterion):
    main = torch.randn(2, 19, 4, 5, requires_grad=True)
    dsn = torch.randn(2, 19, 4, 5, requires_grad=True)
    target = torch.full((2, 31, 37), 255.0)
    loss = criterion([main, dsn], target)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(main.grad, torch.zeros_like(main)) and torch.equal(dsn.grad, torch.zeros_like(dsn))
