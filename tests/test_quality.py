"""The confidence score: its signals on hand-made maps, the calibration's fit and storage, and
the shipped calibration of the official u2netp on real photos."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr

from clearbg.errors import CalibrationError
from clearbg.inference.predictor import Prediction, Predictor
from clearbg.models.download import cached_weights
from clearbg.models.specs import get_spec
from clearbg.quality.calibration import VARIANTS, Calibration, fit_calibration
from clearbg.quality.features import signals
from clearbg.quality.gate import QualityGate, Scorer
from clearbg.quality.store import load_calibration, model_version, save_calibration


def _square(size=40, box=(10, 30, 10, 30), value=1.0) -> np.ndarray:
    p = np.zeros((size, size), np.float32)
    p[box[0]:box[1], box[2]:box[3]] = value
    return p


def test_signals_on_hand_made_maps():
    crisp = _square()
    sure = signals(Prediction(prob=crisp, small=crisp, sides=np.stack([crisp] * 6), flipped=crisp[:, ::-1]))
    assert sure["uncertain"] == 0 and sure["self_iou"] == 1 and sure["side_iou_mean"] == 1 and sure["flip_iou"] == 1
    assert sure["holes"] == 0 and sure["stray_share"] == 0 and sure["product_share"] == pytest.approx(0.25)

    # Half the square only half sure: a soft band, a self-IoU below 1.
    soft = crisp.copy()
    soft[10:20, 10:30] = 0.6
    found = signals(Prediction(prob=soft, small=soft))
    assert found["uncertain"] == pytest.approx(0.5) and found["self_iou"] == pytest.approx(0.8)
    assert "side_iou_mean" not in found and "flip_iou" not in found  # only what the prediction carries

    # A hole and a stray blob; the mirrored map (asymmetric product) disagrees.
    shape = _square(box=(5, 35, 5, 25))
    shape[15:20, 12:17] = 0
    shape[2:4, 35:38] = 1
    found = signals(Prediction(prob=shape, small=shape, flipped=shape[:, ::-1]))
    assert found["holes"] == pytest.approx(np.log1p(1)) and found["hole_share"] > 0 and found["stray_share"] > 0
    assert found["flip_iou"] < 0.7


def _synthetic(n=60, seed=0):
    """Signals whose disagreement grows as IoU falls (the relation the calibration must learn)."""
    rng = np.random.default_rng(seed)
    iou = rng.uniform(0.7, 0.995, n)
    err = 1 - iou
    noise = lambda: rng.normal(1, 0.15, n)  # noqa: E731
    records = [{"uncertain": 2 * e * a, "flip_iou": 1 - e * b, "side_iou_mean": 1 - 1.5 * e * c, "self_iou": 1 - e * d,
                "holes": 0.0, "stray_share": 0.01 * e}
               for e, a, b, c, d in zip(err, noise(), noise(), noise(), noise())]
    return records, iou


def test_fit_predicts_iou_and_round_trips_as_json():
    records, iou = _synthetic()
    calibration = fit_calibration(records, iou, model="m@1", data="synthetic:val")
    assert set(calibration.combiners) == set(VARIANTS)
    test, truth = _synthetic(seed=1)
    for flip in (True, False):
        for sides in (True, False):
            scores = [calibration.combiner(flip, sides).score(r) for r in test]
            assert spearmanr(scores, truth)[0] > 0.8
            assert np.mean(np.abs(np.array(scores) - truth)) < 0.03  # a predicted IoU, not just a rank
    again = Calibration.from_json(calibration.to_json())
    assert again.combiner(True, True).score(test[0]) == calibration.combiner(True, True).score(test[0])
    # "Send 10 %": the threshold under which a tenth of the calibration photos' scores fell.
    threshold = calibration.threshold_for_share(0.1)
    own = [calibration.combiner(True, True).score(r) for r in records]
    assert np.mean(np.array(own) < threshold) == pytest.approx(0.1, abs=0.02)
    with pytest.raises(CalibrationError, match="between 0 and 1"):
        calibration.threshold_for_share(10)
    with pytest.raises(CalibrationError, match="needs at least"):
        fit_calibration(records[:3], iou[:3], model="m@1", data="tiny:val")
    with pytest.raises(CalibrationError, match="not a clearbg confidence calibration"):
        Calibration.from_json('{"version": 1}', "x.json")


def test_calibration_lives_beside_its_checkpoint_and_changed_weights_are_refused(tmp_path):
    checkpoint = tmp_path / "best.pth"
    shutil.copy(cached_weights(get_spec("u2netp")), checkpoint)
    assert load_calibration(str(checkpoint)) is None  # never calibrated: no score, no error
    records, iou = _synthetic()
    calibration = fit_calibration(records, iou, model=model_version(str(checkpoint)), data="synthetic:val")
    where = save_calibration(calibration, str(checkpoint))
    assert where == f"{checkpoint}.confidence.json"
    assert load_calibration(str(checkpoint)).model == calibration.model
    with open(checkpoint, "ab") as f:  # retrained in place: other weights, same file name
        f.write(b"\0")
    with pytest.raises(CalibrationError, match="weights changed.*clearbg calibrate"):
        load_calibration(str(checkpoint))


def test_shipped_u2netp_calibration_scores_real_photos(tiny_pairs):
    """The calibration that ships for the official u2netp, on the 32 photos of the tiny subset (both
    domains): worse masks score lower (measured Spearman 0.78) and the score is close to the IoU."""
    scorer = Scorer.for_model("u2netp", flip=True)
    assert scorer is not None and scorer.model == model_version("u2netp")
    predictor = Predictor("u2netp", engine="torch")  # the side outputs: the richest variant
    rows = tiny_pairs
    scores, ious = [], []
    for row in rows:
        photo = Image.open(row["image"]).convert("RGB")
        truth = np.asarray(Image.open(row["mask"]).convert("L")) > 127
        [prediction] = predictor.predict_detailed([photo], flip=True)
        mask = prediction.prob > 0.5
        ious.append((mask & truth).sum() / (mask | truth).sum())
        scores.append(scorer.score(prediction))
        assert prediction.sides.shape[0] == 6 and prediction.flipped.shape == prediction.small.shape
    assert all(0 < s <= 1 for s in scores)
    assert spearmanr(scores, ious)[0] > 0.65
    assert np.mean(np.abs(np.array(scores) - np.array(ious))) < 0.05
    # The gate judges: under the threshold a candidate goes out, over it nothing happens.
    sent = []
    gate = QualityGate(scorer, threshold=max(scores) + 1e-4, send=sent.append)
    photo = Image.open(rows[0]["image"]).convert("RGB")
    [prediction] = predictor.predict_detailed([photo], flip=True)
    score, review = gate.judge(prediction, source=rows[0]["image"], image=photo)
    assert review and sent[0].score == score and sent[0].model == scorer.model
    assert not QualityGate(scorer, threshold=0.0, send=sent.append).judge(prediction, source="x", image=photo)[1]


def test_calibrate_fits_on_the_val_split_and_then_the_gate_works_for_that_checkpoint(tmp_path, shared_data):
    """`clearbg calibrate` on real photos (10 tiny-subset fashion pairs at half size in `val`), stored
    beside the checkpoint; then `clearbg remove --review-below` runs with it."""
    import pandas as pd
    from click.testing import CliRunner

    from clearbg.cli import cli
    from clearbg.data.prepare import PrepareConfig, prepare_dataset

    root = shared_data / "fashion"
    rows = pd.read_csv(root / "manifest.csv")
    rows = rows[rows["tiny"] == 1].sort_values("id").head(10).reset_index(drop=True)
    for column, resample in (("image", Image.Resampling.BILINEAR), ("mask", Image.Resampling.NEAREST)):
        (tmp_path / column).mkdir()
        for i, rel in enumerate(list(rows[column])):
            with Image.open(root / rel) as im:
                target = tmp_path / column / f"{rows.loc[i, 'id']}.png"
                im.resize((im.width // 2, im.height // 2), resample).save(target)
            rows.loc[i, column] = str(target)
    rows["split"] = "val"
    rows.to_csv(tmp_path / "pairs.csv", index=False)
    prepare_dataset(str(tmp_path / "pairs.csv"), str(tmp_path / "ds"), PrepareConfig(sizes=[(32, 32)]), workers=1)
    checkpoint = tmp_path / "shop.pth"
    shutil.copy(cached_weights(get_spec("u2netp")), checkpoint)

    runner = CliRunner()
    fitted = runner.invoke(cli, ["calibrate", "--model", str(checkpoint), "--data", str(tmp_path / "ds")])
    assert fitted.exit_code == 0, fitted.output
    assert f"fitted on 10 photos of {tmp_path / 'ds'}:val" in fitted.output
    calibration = load_calibration(str(checkpoint))
    assert calibration.model == model_version(str(checkpoint)) and calibration.photos == 10
    gated = runner.invoke(cli, ["remove", rows.loc[0, "image"], "--out", str(tmp_path / "cut"), "--model",
                                str(checkpoint), "--review-below", "1.0", "--queue", str(tmp_path / "q.db")])
    assert gated.exit_code == 0, gated.output
    assert "1 under confidence 1.0000 sent to review" in gated.output
    missing = runner.invoke(cli, ["calibrate", "--model", str(checkpoint), "--data", f"{tmp_path / 'ds'}:test"])
    assert missing.exit_code == 1 and "split 'test'" in missing.output
