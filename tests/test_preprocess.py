"""One preprocessing contract: training sees exactly the tensors the predictor computes, the ONNX
export carries the contract, and training's validation IoU is the number `clearbg evaluate` prints."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clearbg.data.dataset import PairDataset
from clearbg.data.prepare import PrepareConfig, prepare_dataset
from clearbg.imageio import open_image
from clearbg.inference.predictor import Predictor
from clearbg.models import get_spec
from clearbg.models.preprocess import Preprocess


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_pairs_csv) -> str:
    """4 real fashion pairs prepared with the defaults at the model's input size, split by us."""
    out = str(tmp_path_factory.mktemp("preprocess") / "ds")
    config = PrepareConfig(sizes=[(320, 320)], split=(0.5, 0.5, 0.0), resplit=True)
    prepare_dataset(tiny_pairs_csv(4), out, config, workers=1)
    return out


def test_training_and_inference_see_identical_inputs_for_the_same_photo(prepared):
    spec = get_spec("u2netp")
    dataset = PairDataset(prepared, split=None, size=spec.input_size)  # no augmentation
    predictor = Predictor("u2netp", device="cpu", precision="fp32")
    for index in range(len(dataset)):
        item = dataset[index]
        trained_on = spec.preprocess.normalise(item["image"][None])
        photo = open_image(dataset.frame.loc[index, "src_image"])
        seen = spec.preprocess.normalise(torch.from_numpy(predictor.preprocess(photo)[None]).permute(0, 3, 1, 2))
        assert trained_on.shape == seen.shape == (1, 3, 320, 320)
        torch.testing.assert_close(trained_on, seen, atol=1e-5, rtol=0)


def test_padded_preparation_gives_other_inputs_than_inference(prepared, tmp_path, shared_data):
    # The old default (pad) is what the contract fixes: the same photo, different tensors.
    source = pd.read_parquet(f"{prepared}/manifest.parquet").head(1)[["src_image", "src_mask"]]
    source.columns = ["image", "mask"]
    source.to_csv(tmp_path / "one.csv", index=False)
    prepare_dataset(str(tmp_path / "one.csv"), str(tmp_path / "pad"), PrepareConfig(sizes=[(320, 320)], resize="pad"),
                    workers=1)
    padded = PairDataset(str(tmp_path / "pad"), split=None)[0]["image"]
    photo = open_image(source.iloc[0]["image"])
    seen = torch.from_numpy(Predictor("u2netp", device="cpu", precision="fp32").preprocess(photo)).permute(2, 0, 1)
    assert (padded * 255 - seen.float()).abs().mean() > 10


def test_pad_contract_keeps_the_aspect_and_stretch_fills():
    photo = Image.new("RGB", (100, 50), (255, 0, 0))
    stretched = Preprocess(size=40).to_array(photo)
    padded = Preprocess(size=40, resize="pad", pad_color=(0, 0, 255)).to_array(photo)
    assert (stretched == (255, 0, 0)).all()
    assert (padded[0, 20] == (0, 0, 255)).all() and (padded[20, 20] == (255, 0, 0)).all()  # bands above/below
    with pytest.raises(ValueError, match="resize must be one of"):
        Preprocess(resize="crop")


def test_normalise_is_the_same_for_uint8_and_unit_scale():
    pre = Preprocess(size=8)
    pixels = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(pre.normalise(pixels), pre.normalise(pixels.float() / 255), atol=1e-5, rtol=0)


def test_onnx_metadata_carries_the_contract():
    from clearbg.models.onnx_metadata import OnnxMetadata

    contract = Preprocess(size=256, resize="pad", interpolation="bicubic")
    meta = OnnxMetadata.from_props(OnnxMetadata("u2netp.official", contract).to_props())
    assert meta.preprocess == contract and meta.input_size == 256


@pytest.mark.slow
def test_validation_iou_equals_what_evaluate_reports_for_the_same_checkpoint(prepared, tmp_path):
    from clearbg.evaluate.run import evaluate_model
    from clearbg.train.config import load_config
    from clearbg.train.loop import train

    config = load_config(overrides=[f"data={prepared}", f"out={tmp_path}", "epochs=1", "max_steps=1", "batch_size=2",
                                    "workers=0", "tracking_uri=off", "tensorboard=false", "precision=fp32"])
    result = train(config, progress=False)
    evaluation = evaluate_model(result.best_checkpoint, f"{prepared}:val", progress=False)
    reported = float(evaluation.per_image["iou"].mean())
    assert result.best_val_iou == pytest.approx(reported, abs=1e-6)
    assert result.start_val_iou is not None and 0.5 < result.start_val_iou <= 1
    assert np.isfinite(result.metrics["val/iou"])


class _Band(torch.nn.Module):
    """A stand-in network: 'product' exactly on the rows 8..23 of a 32x32 input, nothing elsewhere."""

    def forward(self, x, fused_only=True):
        out = torch.zeros(len(x), 1, 32, 32, dtype=x.dtype)
        out[:, :, 8:24] = 1
        return out


@pytest.mark.parametrize("resize, edge_rows", [("pad", 1.0), ("stretch", 0.0)])
def test_the_predictor_maps_the_output_back_through_the_contract(resize, edge_rows):
    import dataclasses

    from clearbg.models.hub import ResolvedModel

    spec = dataclasses.replace(get_spec("u2netp"), preprocess=Preprocess(size=32, resize=resize))
    predictor = Predictor(ResolvedModel(_Band(), spec, "band"), device="cpu", precision="fp32")
    prob = predictor.predict_one(Image.new("RGB", (100, 50), "gray"))  # pad: the photo fills rows 8..23
    assert prob.shape == (50, 100)
    assert prob[25, 50] == pytest.approx(1.0)
    assert prob[0, 50] == pytest.approx(edge_rows, abs=0.05) and prob[-1, 50] == pytest.approx(edge_rows, abs=0.05)
