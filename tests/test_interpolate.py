"""Weight-space interpolation (WiSE-FT): BatchNorm folding keeps the function, blends are chosen
on the val split, and the written file registers like any checkpoint."""

from __future__ import annotations


import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from clearbg.cli import cli
from clearbg.errors import ClearbgError
from clearbg.evaluate.run import evaluate_model
from clearbg.models import create_model
from clearbg.models.hub import resolve
from clearbg.train.interpolate import fold_batchnorm, interpolate_weights
from clearbg.train.model_init import calibrate_folded_batchnorm


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def official():
    return create_model("u2netp").eval()


@pytest.fixture(scope="module")
def calibrated(official, photos):
    """The official weights written the way training starts from them: BatchNorm with measured
    statistics and the matching affine map, the same eval-mode function."""
    model = create_model("u2netp")
    assert calibrate_folded_batchnorm(model, [photos]) == 112
    return model.eval()


def _out(model, x):
    with torch.no_grad():
        return model(x)[0]


def test_folding_keeps_the_function_and_restores_identity_batchnorm(calibrated, official, photos):
    folded = create_model("u2netp").eval()
    folded.load_state_dict(calibrated.state_dict())
    fold_batchnorm(folded)
    torch.testing.assert_close(_out(folded, photos), _out(calibrated, photos), atol=1e-4, rtol=0)
    torch.testing.assert_close(_out(folded, photos), _out(official, photos), atol=1e-4, rtol=0)
    bn = folded.stage1.rebnconvin.bn_s1
    assert torch.all(bn.running_mean == 0) and torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_interpolation_mixes_functions_not_parameterisations(official, calibrated, photos):
    # The same function written two ways: any blend of the two is that function again, while a
    # plain average of the parameters is another network altogether.
    blend = interpolate_weights(official, calibrated, 0.5)
    torch.testing.assert_close(_out(blend, photos), _out(official, photos), atol=1e-4, rtol=0)
    naive = create_model("u2netp").eval()
    a, b = official.state_dict(), calibrated.state_dict()
    naive.load_state_dict({k: (a[k] + b[k]) / 2 if a[k].is_floating_point() else a[k] for k in a})
    assert (_out(naive, photos) - _out(official, photos)).abs().max() > 0.1


def test_interpolation_ends_are_the_two_networks(official, photos):
    tuned = create_model("u2netp").eval()
    gen = torch.Generator().manual_seed(0)  # seeded: some draws saturate the sigmoid and hide the blend
    with torch.no_grad():
        for p in tuned.parameters():
            if p.numel() > 1:
                p.add_(0.02 * p.std() * torch.randn(p.shape, generator=gen))
    torch.testing.assert_close(_out(interpolate_weights(official, tuned, 0.0), photos), _out(official, photos),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(_out(interpolate_weights(official, tuned, 1.0), photos), _out(tuned, photos),
                               atol=1e-4, rtol=0)
    middle = _out(interpolate_weights(official, tuned, 0.5), photos)
    assert (middle - _out(official, photos)).abs().max() > 1e-3
    assert (middle - _out(tuned, photos)).abs().max() > 1e-3


def test_a_batchnorm_without_a_convolution_before_it_is_refused():
    with pytest.raises(ClearbgError, match="cannot fold"):
        fold_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.BatchNorm2d(4)))


@pytest.fixture(scope="module")
def val_dataset(shared_data, half_size_dataset) -> str:
    """3 real fashion pairs (half size) in the val split."""
    rows = pd.read_csv(shared_data / "fashion" / "manifest.csv")
    return half_size_dataset(rows[rows["tiny"] == 1].sort_values("id").head(3).reset_index(drop=True), "val")


def test_cli_chooses_the_alpha_on_val_and_writes_a_loadable_blend(tmp_path, val_dataset, calibrated):
    # A "fine-tune" that went wrong: the calibrated official weights plus heavy noise. The val
    # split must pick the end nearest the official weights.
    state = calibrated.state_dict()
    gen = torch.Generator().manual_seed(0)
    noisy = {k: v + 0.05 * v.std() * torch.randn(v.shape, generator=gen) if k.endswith("conv_s1.weight") else v
             for k, v in state.items()}
    tuned = tmp_path / "checkpoints" / "latest.pt"
    tuned.parent.mkdir()
    torch.save({"model": noisy, "model_name": "u2netp.official"}, tuned)
    out = tmp_path / "blend.pt"
    result = CliRunner().invoke(cli, ["interpolate", "--model", str(tuned), "--alpha", "0,1",
                                      "--data", val_dataset, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "0      " in result.output and "<- chosen" in result.output
    payload = torch.load(out, map_location="cpu", weights_only=True)
    record = payload["interpolation"]
    assert record["alpha"] == 0.0 and record["selected_on"] == val_dataset
    (a0, iou0), (a1, iou1) = record["tried"]
    assert (a0, a1) == (0.0, 1.0) and iou0 > iou1 + 0.05
    official_val = evaluate_model("u2netp", val_dataset, "val", progress=False).summary()["overall"]["iou_mean"]
    assert iou0 == pytest.approx(official_val, abs=1e-3)
    assert resolve(str(out)).spec.arch == "u2netp"


def test_cli_refuses_to_choose_on_the_test_split_or_without_data(tmp_path, val_dataset):
    runner = CliRunner()
    result = runner.invoke(cli, ["interpolate", "--model", "u2netp", "--alpha", "0.3,0.7", "--out", str(tmp_path / "x.pt")])
    assert result.exit_code != 0 and "val split" in result.output
    result = runner.invoke(cli, ["interpolate", "--model", "u2netp", "--data", f"{val_dataset}:test",
                                 "--out", str(tmp_path / "x.pt")])
    assert result.exit_code != 0 and "not on the test split" in result.output
    assert not (tmp_path / "x.pt").exists()
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    result = runner.invoke(cli, ["interpolate", "--model", "u2netp", "--alpha", "0.5", "--out", str(blocked / "x.pt")])
    assert result.exit_code != 0 and f"cannot write {blocked / 'x.pt'}" in result.output
