"""Per-image metrics and their aggregates on hand-computed masks (issue 6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from clearbg.errors import ClearbgError
from clearbg.evaluate.image_metrics import METRIC_KEYS, boundary, ghost, halo, image_metrics, min_region_area
from clearbg.evaluate.metrics import EMPTY_SCORE, confusion_counts
from clearbg.evaluate.run import GROUP_COLUMN, Evaluation, aggregate, parse_data_arg


def square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_half_overlap_gives_the_hand_computed_scores():
    prob = np.array([[0.9, 0.8, 0.1, 0.0]])
    truth = np.array([[True, False, True, False]])
    m = image_metrics(prob, truth, boundary_tolerance=0)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (1, 1, 1, 1)
    assert m["iou"] == pytest.approx(1 / 3)
    assert m["dice"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert m["mae"] == pytest.approx((0.1 + 0.8 + 0.9 + 0.0) / 4)  # on the probabilities, not the mask
    assert m["fg_fraction"] == pytest.approx(0.5)
    assert set(m) == set(METRIC_KEYS)


def test_counts_agree_with_the_training_metrics():
    rng = np.random.default_rng(0)
    prob = rng.random((37, 53)).astype(np.float32)
    truth = rng.random((37, 53)) > 0.4
    m = image_metrics(prob, truth)
    counts = confusion_counts(torch.from_numpy(prob)[None], torch.from_numpy(truth)[None])[0].tolist()
    assert [m[k] for k in ("tp", "fp", "fn", "tn")] == counts


def test_threshold_is_strict_like_confusion_counts():
    truth = np.array([[True, True]])
    assert image_metrics(np.array([[0.5, 0.51]]), truth)["tp"] == 1
    assert image_metrics(np.array([[0.5, 0.51]]), truth, threshold=0.4)["tp"] == 2


def test_empty_truth_and_empty_prediction_is_a_perfect_answer():
    m = image_metrics(np.zeros((6, 6)), np.zeros((6, 6), bool))
    for key in ("iou", "dice", "precision", "recall", "boundary_f"):
        assert m[key] == EMPTY_SCORE == 1.0, key
    assert m["mae"] == 0.0 and m["error_regions"] == 0.0 and m["fg_fraction"] == 0.0


def test_prediction_on_an_empty_truth_scores_zero():
    prob = square(40, 10, 10, 8).astype(float)
    m = image_metrics(prob, np.zeros((40, 40), bool))
    assert (m["iou"], m["dice"], m["precision"], m["recall"], m["boundary_f"]) == (0, 0, 0, 0, 0)
    assert m["error_regions"] == 1  # one 64-pixel blob to erase (min area 1 at 40 px)


def test_empty_prediction_on_a_real_product_scores_zero():
    m = image_metrics(np.zeros((40, 40)), square(40, 10, 10, 8))
    assert (m["iou"], m["precision"], m["recall"], m["boundary_f"]) == (0, 0, 0, 0)
    assert m["fp"] == 0 and m["fn"] == 64


def test_boundary_f_of_a_one_pixel_shift():
    # 4x4 squares, the prediction one column right. Outlines: 12 pixels each; 6 coincide
    # (top and bottom rows, columns 3..5), so with no tolerance P = R = 6/12 and F = 0.5.
    truth, pred = square(10, 3, 2, 4), square(10, 3, 3, 4)
    assert image_metrics(pred.astype(float), truth, boundary_tolerance=0)["boundary_f"] == pytest.approx(0.5)
    assert image_metrics(pred.astype(float), truth, boundary_tolerance=1)["boundary_f"] == 1.0


def test_the_photo_frame_is_not_an_outline():
    assert not boundary(np.ones((5, 5), bool)).any()
    bottom_half = np.zeros((6, 6), bool)
    bottom_half[3:] = True
    assert boundary(bottom_half).sum() == 6  # only the top row of the half, not the frame edges
    # A product cut by the frame, predicted exactly: perfect edges.
    assert image_metrics(bottom_half.astype(float), bottom_half, boundary_tolerance=0)["boundary_f"] == 1.0


def test_error_regions_count_brush_strokes_not_edge_noise():
    size = 400  # min region: (400 / 100) ** 2 = 16 pixels
    assert min_region_area(size, size) == 16
    truth = square(size, 100, 100, 150)
    pred = truth.copy()
    pred[99, 100:250] = True  # a 1 px ragged edge along the top: edge noise, not a stroke
    pred[20:25, 20:25] = True  # 25 px of background kept: a stroke
    pred[350:353, 350:353] = True  # 9 px speck: below the minimum, ignored
    pred[170:176, 170:176] = False  # a 36 px hole inside the product: a stroke
    m = image_metrics(pred.astype(float), truth)
    assert m["error_regions"] == 2
    assert image_metrics(truth.astype(float), truth)["error_regions"] == 0


def test_metric_arguments_are_checked():
    with pytest.raises(ValueError, match="same"):
        image_metrics(np.zeros((4, 4)), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="boundary_tolerance"):
        image_metrics(np.zeros((4, 4)), np.zeros((4, 4), bool), boundary_tolerance=-1)


def test_ghost_is_alpha_outside_the_truth_over_the_product_area():
    truth = np.zeros((10, 10), bool)
    truth[:4] = True  # 40 product pixels
    alpha = truth.astype(float)
    assert ghost(alpha, truth) == 0.0
    alpha[6, :5] = 0.4  # 2 pixels' worth of faint background
    alpha[9, 9] = 1.0   # and 1 opaque pixel of it
    assert ghost(alpha, truth) == pytest.approx(3 / 40)
    assert ghost((alpha * 255).round().astype(np.uint8), truth) == pytest.approx(3 / 40, abs=1e-3)
    assert ghost(np.zeros((3, 3)), np.zeros((3, 3), bool)) == 0.0  # empty and empty: nothing shown


def test_halo_sees_the_old_background_in_the_edge_and_not_a_clean_colour():
    photo = np.zeros((20, 20, 3), np.uint8)
    photo[:, :10] = (200, 30, 30)  # red product | blue background
    photo[:, 10:] = (20, 40, 220)
    photo[:, 10] = (110, 35, 125)   # one column where the camera blended them
    truth = np.zeros((20, 20), bool)
    truth[:, :10] = True
    alpha = truth.astype(float)
    alpha[:, 10] = 0.5
    fringe = halo(photo, photo, alpha, truth)  # the blended colour kept at alpha 0.5: purple on white
    clean = photo.copy()
    clean[:, 10] = (200, 30, 30)               # decontaminated: the product's own red at alpha 0.5
    assert halo(photo, clean, alpha, truth) == pytest.approx(0.0, abs=1e-6)
    assert fringe > 3  # one column of seven in the band: Delta E ~33 there
    assert halo(photo, photo, alpha, truth, (0, 0, 0)) > 3  # on black too
    assert np.isnan(halo(photo, photo, alpha, np.zeros((20, 20), bool)))  # no product: nothing to compare


def test_aggregate_means_medians_shares_and_pooled_iou():
    rows = pd.DataFrame(
        {
            "iou": [1.0, 0.97, 0.95, 0.5],
            "tp": [4, 97, 19, 1],
            "fp": [0, 2, 1, 1],
            "fn": [0, 1, 0, 0],
            "tn": [0, 0, 0, 0],
        }
    )
    figures = aggregate(rows)
    assert figures["n"] == 4
    assert figures["iou_mean"] == pytest.approx((1.0 + 0.97 + 0.95 + 0.5) / 4)
    assert figures["iou_median"] == pytest.approx(0.96)
    assert figures["share_iou_95"] == 0.75  # 0.95 itself counts: "at >= 95 %"
    assert figures["share_iou_97"] == 0.5
    assert figures["share_iou_99"] == 0.25
    assert figures["iou_pooled"] == pytest.approx(121 / (121 + 4 + 1))  # summed counts first


def test_summary_per_group_and_worst_list():
    per_image = pd.DataFrame(
        {
            "id": ["a1", "a2", "b1", "b2", "b3"],
            GROUP_COLUMN: ["shoes", "shoes", "light", "light", "light"],
            "image": [""] * 5,
            "mask": [""] * 5,
            "iou": [0.99, 0.90, 0.96, 0.80, 0.98],
            "tp": [99, 90, 96, 80, 98],
            "fp": [1, 10, 4, 20, 2],
            "fn": [0] * 5,
            "tn": [0] * 5,
        }
    )
    summary = Evaluation("m", "ds:test", per_image).summary(worst_k=2)
    assert summary["n"] == 5
    assert set(summary["groups"]) == {"shoes", "light"}
    shoes, light = summary["groups"]["shoes"], summary["groups"]["light"]
    assert shoes["n"] == 2 and shoes["iou_mean"] == pytest.approx(0.945) and shoes["share_iou_95"] == 0.5
    assert light["n"] == 3 and light["iou_median"] == pytest.approx(0.96)
    assert light["share_iou_97"] == pytest.approx(1 / 3)
    assert light["iou_pooled"] == pytest.approx(274 / 300)
    assert summary["overall"]["share_iou_95"] == pytest.approx(3 / 5)
    assert summary["worst"] == ["b2", "a2"]


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("data/fashion", ("data/fashion", "test")),
        ("data/fashion:val", ("data/fashion", "val")),
        ("s3://bucket/sets/fashion", ("s3://bucket/sets/fashion", "test")),
        ("s3://bucket/sets/fashion:all", ("s3://bucket/sets/fashion", "all")),
    ],
)
def test_parse_data_arg(arg, expected):
    assert parse_data_arg(arg) == expected


def test_parse_data_arg_rejects_unknown_splits():
    with pytest.raises(ClearbgError, match="unknown split 'tset'.*train, val, test, all"):
        parse_data_arg("data/fashion:tset")
