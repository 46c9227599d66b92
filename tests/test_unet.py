"""The classic U-Net (Carvana seed): shapes, size, the registry entry, learning, inference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clearbg.errors import WeightsNotFound
from clearbg.inference.predictor import Predictor
from clearbg.models import create_model, get_spec
from clearbg.models.hub import ResolvedModel
from clearbg.models.preprocess import Preprocess
from clearbg.models.unet import UNet
from clearbg.models.weights import load_model_file

@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models gain nothing from a second thread, and on a busy 2-core machine OpenMP's
    # barrier waits for a descheduled thread (seconds per step); one thread keeps these fast.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)



@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
@pytest.mark.parametrize("hw", [(64, 64), (96, 160), (50, 70)])
def test_output_has_the_input_size_for_any_size(hw, upsampling):
    model = UNet(base=4, upsampling=upsampling).eval()
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        outputs = model(x)
        fused = model(x, fused_only=True)
        logits = model(x, logits=True)
    assert isinstance(outputs, tuple) and len(outputs) == 1  # same form as U2Net: a tuple of maps
    assert outputs[0].shape == fused.shape == (2, 1, *hw)
    assert 0 <= float(fused.min()) and float(fused.max()) <= 1
    assert torch.allclose(torch.sigmoid(logits[0]), fused, atol=1e-6)


def test_parameter_count_of_the_seed_architecture():
    counts = {
        (64, "transpose"): sum(p.numel() for p in UNet(base=64).parameters()),
        (64, "bilinear"): sum(p.numel() for p in UNet(base=64, upsampling="bilinear").parameters()),
        (32, "transpose"): sum(p.numel() for p in UNet(base=32).parameters()),
    }
    # The Carvana seed's UNET(features=[64, 128, 256, 512]) has 31,037,633 parameters.
    assert counts[(64, "transpose")] == 31_037_633
    assert counts[(64, "bilinear")] == 28_948_673
    # Halving every width divides the conv weights by ~4.
    assert 3.9 < counts[(64, "transpose")] / counts[(32, "transpose")] < 4.1
    assert sum(p.numel() for p in create_model("unet", pretrained=False).parameters()) == 31_037_633


def test_registry_entry_has_no_weights_and_says_how_to_build_it():
    spec = get_spec("unet")
    assert spec.name == "unet.scratch" and spec.weights is None and spec.input_size == 320
    assert isinstance(create_model("unet", pretrained=False), UNet)
    with pytest.raises(WeightsNotFound, match="no pretrained weights.*pretrained=False"):
        create_model("unet")  # what `--init official` asks for


def test_a_trained_checkpoint_is_recognised_as_unet(tmp_path):
    model = create_model("unet", pretrained=False)
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 1}, tmp_path / "u.pt")
    loaded, arch = load_model_file(tmp_path / "u.pt")
    assert arch == "unet" and isinstance(loaded, UNet)
    assert torch.equal(loaded.final_conv.weight, model.final_conv.weight)


def _pair(row, size=64):
    image = Image.open(row["image"]).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    mask = Image.open(row["mask"]).convert("L").resize((size, size), Image.Resampling.NEAREST)
    x = torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)[None]
    y = torch.from_numpy((np.asarray(mask) > 127).astype(np.float32))[None, None]
    return x, y


def test_a_few_steps_from_scratch_fit_one_real_pair(tiny_pairs):
    torch.manual_seed(0)
    x, y = _pair(next(r for r in tiny_pairs if r["domain"] == "fashion"))
    model = UNet(base=8).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        (logits,) = model(x, logits=True)
        loss = F.binary_cross_entropy_with_logits(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # Measured: 0.60 -> 0.26 in 15 steps; a broken backward or a dead output stays near 0.6.
    assert losses[-1] < 0.6 * losses[0], losses
    assert max(losses[-5:]) < min(losses[:5]), losses


def test_predictor_runs_the_unet_on_a_photo(fashion_photo):
    torch.manual_seed(0)
    predictor = Predictor(create_model("unet", pretrained=False), device="cpu", precision="fp32")
    [prob] = predictor.predict([fashion_photo])
    assert prob.shape == (fashion_photo.height, fashion_photo.width) and prob.dtype == np.float32
    assert 0 <= prob.min() and prob.max() <= 1 and prob.max() > prob.min()


def test_inference_rewrites_keep_the_unet_output(fashion_photo):
    # The Predictor folds BatchNorm and fuses conv+ReLU; with non-trivial BN statistics the
    # U-Net must give what its plain eval forward gives.
    torch.manual_seed(0)
    model = UNet(base=8).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    spec = dataclasses.replace(get_spec("unet"), preprocess=Preprocess(size=64))
    predictor = Predictor(ResolvedModel(model, spec, "UNet(base=8)"), device="cpu", precision="fp32", batch_size=1)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in predictor.module.modules())
    inputs = predictor.preprocess(fashion_photo)[None]
    actual = predictor.predict_small(inputs)
    x = torch.from_numpy(inputs).permute(0, 3, 1, 2).float()
    x = x / x.amax()
    x = (x - torch.tensor(spec.preprocess.mean).view(1, 3, 1, 1)) / torch.tensor(spec.preprocess.std).view(1, 3, 1, 1)
    with torch.no_grad():
        prob = model(x, fused_only=True)
    expected = (prob - prob.min()) / (prob.max() - prob.min())
    assert isinstance(actual, np.ndarray) and np.allclose(actual, expected.numpy(), atol=1e-4)


def test_models_listing_and_readme_state_the_widths_the_code_builds(tmp_path, monkeypatch):
    from pathlib import Path

    from click.testing import CliRunner

    from clearbg.cli import cli
    from clearbg.models.unet import unet

    model = unet()
    widths = [down[-1].conv_s1.out_channels for down in model.downs]
    words = f"widths {'-'.join(map(str, widths))}, {model.bottleneck[-1].conv_s1.out_channels}-wide bottleneck"
    assert words == "widths 64-128-256-512, 1024-wide bottleneck"
    monkeypatch.setenv("CLEARBG_HOME", str(tmp_path))
    listing = CliRunner().invoke(cli, ["models"]).output
    assert words in next(line for line in listing.splitlines() if line.startswith("unet.scratch"))
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    assert words in readme and "widths 64 to 1024" not in readme
