"""Count-first binary metrics on hand-computed masks (clearbg.evaluate.metrics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clearbg.evaluate.metrics import (
    EMPTY_SCORE,
    confusion_counts,
    dice_from_counts,
    iou_from_counts,
)


def test_half_overlap_gives_iou_one_half():
    # smp's case: truth [1, 1, 1, 1], prediction [1, 1, 0, 0] -> tp 2, fn 2, IoU 2/4, Dice 4/6.
    pred = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    truth = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    counts = confusion_counts(pred, truth)
    assert counts.tolist() == [[2, 0, 2, 0]]
    assert iou_from_counts(counts).item() == pytest.approx(0.5)
    assert dice_from_counts(counts).item() == pytest.approx(2 / 3)


def test_counts_on_a_2d_mask_by_hand():
    truth = np.array([[0, 1, 1], [0, 1, 1], [0, 0, 0]], bool)
    pred = np.array([[0.9, 0.8, 0.1], [0.7, 0.6, 0.2], [0.0, 0.0, 0.4]])  # > 0.5: (0,0) (0,1) (1,0) (1,1)
    counts = confusion_counts(pred[None], truth[None])
    assert counts.tolist() == [[2, 2, 2, 3]]  # tp (0,1)(1,1); fp (0,0)(1,0); fn (0,2)(1,2); tn 3
    assert iou_from_counts(counts).item() == pytest.approx(2 / 6)
    assert dice_from_counts(counts).item() == pytest.approx(4 / 8)


def test_logits_with_threshold_zero_match_probabilities():
    logits = torch.tensor([[[-2.0, 0.5], [3.0, -0.1]]])
    truth = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])
    assert confusion_counts(logits, truth, threshold=0.0).tolist() == confusion_counts(torch.sigmoid(logits), truth).tolist()


def test_empty_truth_and_empty_prediction_is_the_documented_perfect_score():
    empty = torch.zeros(1, 8, 8)
    counts = confusion_counts(empty, empty)
    assert counts.tolist() == [[0, 0, 0, 64]]
    assert EMPTY_SCORE == 1.0
    assert iou_from_counts(counts).item() == 1.0 and dice_from_counts(counts).item() == 1.0
    assert np.isnan(iou_from_counts(counts, empty=float("nan")).item())  # or chosen by the caller


def test_empty_truth_with_a_prediction_scores_zero_and_so_does_the_reverse():
    some = torch.zeros(1, 4, 4)
    some[0, 1, 1] = 1
    none = torch.zeros(1, 4, 4)
    assert iou_from_counts(confusion_counts(some, none)).item() == 0.0  # false positive only
    assert iou_from_counts(confusion_counts(none, some)).item() == 0.0  # missed product
    assert dice_from_counts(confusion_counts(some, none)).item() == 0.0


def test_pooled_iou_is_not_the_mean_of_per_image_ious():
    # Image A: big object, perfect. Image B: tiny object, missed. Pooled weighs pixels, the
    # per-image mean weighs images; both are well defined from the same counts.
    pred = torch.zeros(2, 10, 10)
    truth = torch.zeros(2, 10, 10)
    pred[0, :5], truth[0, :5] = 1, 1  # 50 px right
    truth[1, 0, 0] = 1  # 1 px missed
    counts = confusion_counts(pred, truth)
    per_image = iou_from_counts(counts)
    assert per_image.tolist() == [1.0, 0.0]
    assert iou_from_counts(counts.sum(0)).item() == pytest.approx(50 / 51)
    assert per_image.mean().item() == pytest.approx(0.5)


def test_counts_add_up_across_batches_like_across_processes():
    g = torch.Generator().manual_seed(0)
    pred, truth = torch.rand(6, 16, 16, generator=g), torch.rand(6, 16, 16, generator=g) > 0.5
    whole = confusion_counts(pred, truth).sum(0)
    split = confusion_counts(pred[:2], truth[:2]).sum(0) + confusion_counts(pred[2:], truth[2:]).sum(0)
    assert whole.tolist() == split.tolist()
    assert int(whole.sum()) == 6 * 16 * 16


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        confusion_counts(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))


def test_a_probability_exactly_at_the_threshold_is_background():
    # `pred > threshold`: 0.5 itself is not product; a ">=" would count it as a true positive.
    pred = torch.tensor([[0.5, 0.5001, 0.4999, 0.5]])
    truth = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert confusion_counts(pred, truth, threshold=0.5).tolist() == [[1, 0, 1, 2]]


def test_a_single_pixel_product_found_exactly_scores_one():
    pred = torch.zeros(1, 4, 4)
    pred[0, 1, 2] = 1
    counts = confusion_counts(pred, pred.clone())
    assert counts.tolist() == [[1, 0, 0, 15]] and counts.dtype == torch.int64
    assert iou_from_counts(counts).item() == 1.0 and dice_from_counts(counts).item() == 1.0


def test_masks_without_a_batch_axis_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"got shape \(4,\); add a batch axis with x\[None\]"):
        confusion_counts(torch.zeros(4), torch.zeros(4))
